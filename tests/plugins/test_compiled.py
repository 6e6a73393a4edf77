"""compiled: the whole decoder step really compiles (one graph, no break), and conforms to naive.

Cold compiles cost about 25 s each on a 2-core CPU (benchmarks/cold_compile.py), so this file compiles
once (lstm, forward and backward, through the conformance kit) and checks gru and rnn with dynamo's
tracer only.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import quatrain
from quatrain.testing import assert_conforms


def _step_inputs(model: quatrain.Autoencoder, B: int = 3, S: int = 5):
    decoder = model.decoder
    memory = torch.randn(B, S, model.config.hidden_size)
    key_mask = torch.ones(B, S, dtype=torch.bool)
    key_mask[0, 2:] = False
    state = decoder.initial_state(torch.randn(B, model.config.bottleneck_dim))
    attn_state = decoder.fold(decoder.attention.prepare(memory, key_mask))  # as the decoder's forward passes it
    return torch.randn(B, model.config.embed_dim), state, attn_state, torch.randn(model.config.hidden_size), False


def _called(explanation) -> list[str]:
    return [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
def test_whole_step_traces_as_one_graph_without_breaks(registry, tiny, rnn):
    """The compiled step is Decoder.cell_step: the RNN's cell arithmetic is in the graph, not a fused RNN op."""
    model = quatrain.Autoencoder(tiny.evolve(rnn=rnn), "compiled")
    with torch._dynamo.config.patch(allow_rnn=True):
        explanation = torch._dynamo.explain(model.decoder.cell_step)(*_step_inputs(model))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    ops = _called(explanation)
    assert sum("linear" in op for op in ops) >= 2 * tiny.num_layers, "RNN cell arithmetic left out of the graph"
    assert any(("sigmoid" if rnn != "rnn" else "tanh") in op for op in ops)
    assert not any(kind in op for op in ops for kind in ("lstm", "gru", "rnn_tanh")), "a fused RNN op is in the graph"
    assert any("scaled_dot_product_attention" in op for op in ops)


def test_without_allow_rnn_dynamo_would_leave_nn_lstm_out(registry, tiny):
    """Why the backend compiles cell_step: dynamo silently leaves nn.LSTM out of the graph (no break reported)."""
    model = quatrain.Autoencoder(tiny, "compiled")
    with torch._dynamo.config.patch(allow_rnn=False):
        explanation = torch._dynamo.explain(model.decoder.step)(*_step_inputs(model))
    assert not any("lstm" in op for op in _called(explanation))


@pytest.mark.slow
def test_compiled_conforms_and_compiles_without_breaks(registry):
    torch._dynamo.reset()
    counters.clear()
    report = assert_conforms("compiled", rnn_kinds=("lstm",), dtypes=("float32",), registry=registry)
    assert any(c.name == "decode.sequential[lstm]" for c in report.checks)
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_step_is_memoised_per_decoder(registry, tiny):
    model = quatrain.Autoencoder(tiny, "compiled").eval()
    step = model.decoder.attention.wrap_step(model.decoder.step)
    assert model.decoder.attention.wrap_step(model.decoder.step) is step  # torch.compile is lazy: no compile yet
    copy = __import__("copy").deepcopy(model)
    assert copy.decoder.attention.wrap_step(copy.decoder.step) is not step
    with pytest.raises(TypeError, match="compiled wraps Decoder.step"):
        model.decoder.attention.wrap_step(lambda *args: args)


def test_lone_steps_between_forced_stretches_compile_once(registry, tiny, make_batch):
    """On CPU a decode at 0 < teacher forcing < 1 runs lone steps between stretches of forced steps; each
    lone step's input comes from a stretch of another length, yet every call reuses one compiled graph."""
    model = quatrain.Autoencoder(tiny, "compiled").eval()
    x, mask = make_batch(tiny, [9, 6], T=9)
    counters.clear()
    with torch.no_grad():
        for seed in range(4):  # four coin patterns: stretches of different lengths
            torch.manual_seed(seed)
            model(x, mask, teacher_forcing=0.5)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
