"""benchmarks/attention_floor.py's counting: the FLOP formulas it adds to torch's, its expected K/V reads, and
that attention's added arithmetic comes out as what the attention layer computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import quatrain

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention_floor.py"


@pytest.fixture(scope="module", name="floor")
def _floor():
    spec = importlib.util.spec_from_file_location("attention_floor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["attention_floor"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["attention_floor"]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's, on switching oneDNN
@pytest.mark.parametrize("onednn", [True, False])
def test_an_rnn_layer_counts_its_gate_products_forward_and_twice_backward(floor, onednn):
    """oneDNN's RNN layer has no formula in torch's counter; the script's is 2 (E + H) G H per row and step,
    twice that backward. Without oneDNN (off, or a CPU without it) the layer is products the counter knows: the
    same forward, and a backward that skips the zero initial state's gradient, one step's recurrent product."""
    B, T, E, H = 3, 5, 7, 11
    lstm = torch.nn.LSTM(E, H, batch_first=True)
    x = torch.randn(B, T, E, requires_grad=True)
    with torch.backends.mkldnn.flags(enabled=onednn):
        with floor._Counter() as forward:
            out, _ = lstm(x)
        with floor._Counter() as backward:
            out.sum().backward()
    assert sum(forward.counts.values()) == 2 * B * T * 4 * H * (E + H)
    initial_state = 0 if onednn and torch.backends.mkldnn.is_available() else 2 * B * 4 * H * H
    assert sum(backward.counts.values()) == 4 * B * T * 4 * H * (E + H) - initial_state
    if onednn and torch.backends.mkldnn.is_available():
        assert set(forward.counts) == {"mkldnn_rnn_layer"} and set(backward.counts) == {"mkldnn_rnn_layer_backward"}


def test_expected_kv_reads_follow_the_engine(floor):
    T = 50
    assert floor.kv_reads("infer", T, stretches=False) == T
    assert floor.kv_reads("train-par", T, stretches=True) == 0
    assert floor.kv_reads("train-seq", T, stretches=False) == 2 * T  # every step, forward and backward
    # stretches at tf 0.9: 5 lone steps and about 5.3 runs of forced steps, each read forward and backward
    assert floor.kv_reads("train-seq", T, stretches=True) == pytest.approx(2 * (T * 0.1 + 0.9 + 49 * 0.9 * 0.1))


def test_inference_adds_the_attention_layers_products(floor, tiny, make_batch):
    """At inference, with one query a step: the added arithmetic is K and V projected once, each step's query
    projection, scores and context, and the integration layer's doubled input (w_o folded into it: one product
    per decode), in multiply-adds x 2; the counts come from torch's own formulas."""
    config = tiny.evolve(attention="encoder")
    models = floor.build_variants(config, ["none", "cached-decoder"], device=torch.device("cpu"),
                                  dtype=torch.float32, registry=quatrain.registry.get_registry())  # fmt: skip
    B, S, H = 2, config.max_len, config.hidden_size
    x, mask = make_batch(config, [S, S - 3])
    steps = x.shape[1]
    base = sum(floor.counted(models["none"], "infer", x, mask).values())
    more = sum(floor.counted(models["cached-decoder"], "infer", x, mask).values()) - base
    per_decode = 2 * B * S * H * 2 * H + 2 * H * H * H  # K and V; w_o into the integration layer
    per_step = 2 * B * H * H + 2 * 2 * B * S * H + 2 * B * H * H  # query; scores and context; the doubled input
    assert more == per_decode + steps * per_step
