"""The 'steps' engine's training decode replayed: steps without autograd, then one differentiated parallel pass."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch

import quatrain
from quatrain import _replay, _rnn
from quatrain._compare import compare, without_kinks
from quatrain._rnn import autocast_problem

RNNS = ["lstm", "gru", "rnn"]


def decode_and_grads(model, x, mask, seed=3, teacher_forcing=0.5):
    """Loss and the gradients of every parameter (and of ``x`` when it needs one), the coins seeded."""
    torch.manual_seed(seed)
    out = model(x, mask, teacher_forcing=teacher_forcing).reconstruction
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).square().sum()
    named = list(model.named_parameters()) + ([("x", x)] if x.requires_grad else [])
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return loss, {n: g for (n, _), g in zip(named, grads, strict=True)}


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("backend", ["cached-decoder", "naive", None])
@pytest.mark.parametrize("teacher_forcing", [0.0, 0.5])
def test_the_replay_equals_autograd_through_every_step(tiny, make_batch, rnn, backend, teacher_forcing):
    """float64: loss, every parameter's gradient and the input's equal those of autograd through each step
    (``step_form='steps'``), and the decoder's stacked RNN is never called (DecodeRNN's single-layer
    modules run the steps and the sequence backward)."""
    config = tiny.evolve(rnn=rnn, attention="none" if backend is None else "encoder", dropout=0.0)
    model = quatrain.Autoencoder(config, backend, engine="steps").double()
    x, mask = make_batch(config, [6, 4, 1, 0])
    x = x.double().requires_grad_()
    stepwise = copy.deepcopy(model)
    stepwise.decoder.step_form = "steps"
    calls: list[int] = []
    model.decoder.rnn.register_forward_hook(lambda *_: calls.append(1))
    loss, grads = decode_and_grads(model, x, mask, teacher_forcing=teacher_forcing)
    want_loss, want = decode_and_grads(stepwise, x, mask, teacher_forcing=teacher_forcing)
    assert calls == []
    torch.testing.assert_close(loss, want_loss)
    assert grads.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(grads[name], want[name], msg=name)
    assert grads["x"][:, :-1].abs().sum() > 0 or teacher_forcing == 0.0  # forced inputs carried gradient


@pytest.mark.parametrize("backend", ["cached-decoder", None])
def test_with_dropout_the_replay_applies_the_steps_masks(tiny, make_batch, monkeypatch, backend):
    """Dropout 0.5 between three LSTM layers, on the queries and in the integration layer, no teacher
    forcing: every step read the previous step's output, so each input the steps read equals the replayed
    output before it, which holds only if the replay applied the steps' own masks."""
    config = tiny.evolve(attention="none" if backend is None else "encoder", dropout=0.5, num_layers=3)
    model = quatrain.Autoencoder(config, backend, engine="steps").double().train()
    x, mask = make_batch(config, [7, 5, 2])
    read: list[torch.Tensor] = []
    sequence = _rnn.DecodeRNN.sequence
    monkeypatch.setattr(_rnn.DecodeRNN, "sequence", lambda self, inputs: read.append(inputs) or sequence(self, inputs))
    out = model(x.double(), mask, teacher_forcing=0.0).reconstruction
    assert len(read) == 1
    torch.testing.assert_close(read[0][:, 1:], out[:, :-1].detach())
    decoy = model(x.double(), mask, teacher_forcing=0.0).reconstruction  # fresh masks: another decode
    assert not torch.allclose(decoy, out)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_the_sequence_backward_runs_once_a_decode_and_leaves_nothing_behind(tiny, make_batch, monkeypatch):
    """One sequence backward per decode (not one per step), its records cleared after it; inference runs
    its steps through a DecodeRNN too, with no backward; a decode of one step is replayed as well."""
    config = tiny.evolve(dropout=0.0)
    model = quatrain.Autoencoder(config, engine="steps")
    x, mask = make_batch(config, [5, 3])
    made: list[_rnn.DecodeRNN] = []
    backwards: list[int] = []

    class Counted(_rnn.DecodeRNN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def backward(self, d_out, inputs, needed):
            backwards.append(len(self.outputs))
            return super().backward(d_out, inputs, needed)

    monkeypatch.setattr(_replay, "DecodeRNN", Counted)
    model(x, mask, teacher_forcing=0.5).reconstruction.sum().backward()
    assert backwards == [x.shape[1]]
    assert len(made) == 1 and made[0].outputs == [] and made[0].masks is None
    with torch.no_grad():
        model(x, mask)
    assert len(made) == 2 and backwards == [x.shape[1]]
    one = model(x[:, :1], mask[:, :1], teacher_forcing=0.5).reconstruction
    one.sum().backward()
    assert len(made) == 3 and one.shape == (2, 1, config.embed_dim) and backwards == [x.shape[1], 1]


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("backend", ["cached-decoder", None])
@pytest.mark.parametrize("teacher_forcing", [0.0, 0.5])
def test_inference_through_the_decode_rnn_equals_the_plain_step(tiny, make_batch, rnn, backend, teacher_forcing):
    """Without gradients (eval, float64) the steps' outputs through DecodeRNN (the input projection folded
    into the first layer) equal ``step`` as written; asking for attention weights takes ``step``."""
    config = tiny.evolve(rnn=rnn, attention="none" if backend is None else "encoder")
    model = quatrain.Autoencoder(config, backend, engine="steps").double().eval()
    plain = copy.deepcopy(model)
    plain.decoder.step_form = "steps"
    x, mask = make_batch(config, [6, 4, 1, 0])
    calls: list[int] = []
    model.decoder.rnn.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        torch.manual_seed(1)
        got = model(x.double(), mask, teacher_forcing=teacher_forcing).reconstruction
        torch.manual_seed(1)
        want = plain(x.double(), mask, teacher_forcing=teacher_forcing).reconstruction
        assert calls == []
        if backend is not None:
            torch.manual_seed(1)
            weighted = model(x.double(), mask, teacher_forcing=teacher_forcing, need_weights=True)
            assert weighted.attention is not None and calls == [1] * x.shape[1]
            torch.testing.assert_close(weighted.reconstruction, want)
    torch.testing.assert_close(got, want)


def test_a_backend_without_a_parallel_decode_is_differentiated_step_by_step(tiny, make_batch, made_deferrals, registry):
    """The replay needs the backend's parallel decode: without it, each step is differentiated (its linear
    layers deferred), and the result is still autograd's."""
    base = registry.backend("cached-decoder").cls

    class Stepwise(base):
        capabilities = attrs.evolve(base.capabilities, parallel_decode=False)

    config = tiny.evolve(dropout=0.0)
    model = quatrain.Autoencoder(config, Stepwise, engine="steps").double()
    x, mask = make_batch(config, [5, 3])
    reference = quatrain.Autoencoder(config, "cached-decoder", engine="steps").double()
    reference.load_state_dict(model.state_dict())
    loss, grads = decode_and_grads(model, x.double(), mask)
    assert len(made_deferrals) == 1
    want_loss, want = decode_and_grads(reference, x.double(), mask)
    torch.testing.assert_close(loss, want_loss)
    for name in want:
        torch.testing.assert_close(grads[name], want[name], msg=name)


@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_under_bf16_autocast_the_replay_keeps_to_the_rule(tiny, make_batch, attention):
    """Under bf16 autocast (``--precision bf16``): loss and every gradient of the replay, against a float64
    golden, stay within the comparison rule's bound of the step-by-step backward's own error."""
    config = tiny.evolve(attention=attention, dropout=0.0)
    if (problem := autocast_problem(config.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    torch.manual_seed(0)
    model = without_kinks(quatrain.Autoencoder(config, None if attention == "none" else "deferred-kv", engine="steps"))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16())  # weights bfloat16 holds exactly: the golden starts from the same values
    x, mask = make_batch(config, [6, 4, 1])
    x = x.bfloat16().float()

    def run(m, form, autocast):
        m.decoder.step_form = form
        dtype = next(m.parameters()).dtype
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, grads = decode_and_grads(m, x.to(dtype), mask)
        return {"loss": loss.detach().double(), **{f"grad {n}": g.double() for n, g in grads.items()}}

    golden = run(copy.deepcopy(model).double(), "steps", autocast=False)
    reference = run(model, "steps", autocast=True)
    candidate = run(model, "replay", autocast=True)
    result = compare(golden, reference, candidate, dtype=torch.bfloat16, gradient_kind="model gradient")
    assert result.passed, result.format()
