"""The output fold: a backend that names its output weight gets it multiplied into the decoder's integration
layer once per decode; the model computes the same function (outputs and every gradient) as without the fold,
and the output projection no longer runs per step."""

from __future__ import annotations

import copy

import pytest
import torch

import quatrain
from quatrain.registry import load_registry
from tests.conftest import random_batch

pytestmark = pytest.mark.usefixtures("one_thread")

EXPENSIVE_WARMUP_S = 10.0


def _folding() -> list[str]:
    """Registered backends that declare an output fold and run on CPU; one that compiles its step (a
    declared warm-up of many seconds) folds the same way and is covered by the conformance kit instead."""
    return sorted(
        name
        for name, entry in load_registry(disabled=()).backends.items()
        if entry.cls.output_weight is not None
        and "cpu" in entry.cls.capabilities.devices
        and entry.cls.capabilities.warmup_seconds <= EXPENSIVE_WARMUP_S
    )


FOLDING = _folding()


def test_the_folding_backends_come_from_the_registry():
    assert {"cached-decoder", "deferred-kv"} <= set(FOLDING) and "naive" not in FOLDING


def _unfolded(model, monkeypatch):
    twin = copy.deepcopy(model)
    monkeypatch.setattr(type(twin.decoder.attention), "output_weight", None)  # class-wide: restored after the test
    return twin


@pytest.mark.parametrize("teacher_forcing", [0.0, 0.6, 1.0], ids=["autoregressive", "sampled", "parallel"])
@pytest.mark.parametrize("backend", FOLDING)
@pytest.mark.parametrize("engine", ["steps", "stretches"])
def test_the_fold_computes_the_same_function(registry, backend, teacher_forcing, engine):
    """float64, dropout on (same seed per pass): the folded model's outputs and gradients equal the unfolded
    one's, through every decode path."""
    config = quatrain.ModelConfig.preset("tiny", dropout=0.1)
    torch.manual_seed(0)
    model = quatrain.Autoencoder(config, backend, engine=engine).double()
    x, mask = random_batch(config, [7, 3, 1, 0, 5], T=7)
    x = x.double()
    results = []
    with pytest.MonkeyPatch.context() as mp:
        for m in (model, _unfolded(model, mp)):
            torch.manual_seed(1)
            out = m(x, mask, teacher_forcing=teacher_forcing).reconstruction
            grads = torch.autograd.grad((out * torch.linspace(-1, 1, config.embed_dim)).sum(), list(m.parameters()))
            results.append((out, grads))
    (out_f, grads_f), (out_u, grads_u) = results
    torch.testing.assert_close(out_f, out_u, rtol=1e-10, atol=1e-12)
    names = [n for n, _ in model.named_parameters()]
    for name, got, want in zip(names, grads_f, grads_u, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)
    w_o = dict(zip(names, grads_f, strict=True))["decoder.attention.w_o.weight"]
    assert w_o.abs().sum() > 0  # the output weight learns through the folded product


@pytest.mark.parametrize("backend", FOLDING)
def test_the_output_projection_runs_once_per_decode_not_per_step(registry, backend, monkeypatch):
    config = quatrain.ModelConfig.preset("tiny")
    model = quatrain.Autoencoder(config, backend).eval()
    calls = []
    model.decoder.attention.w_o.register_forward_hook(lambda *a: calls.append(1))
    x, mask = random_batch(config, [6, 4], T=6)
    with torch.no_grad():
        model(x, mask)
        assert calls == []  # folded: its weight was read once, the module never called
        out = model(x, mask, need_weights=True)  # weights asked: the unfolded path
    assert len(calls) == 6 and out.attention is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask).reconstruction, out.reconstruction, rtol=1e-5, atol=1e-6)


def test_a_backend_without_an_output_weight_is_not_folded(registry):
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny"), "naive")
    folded = model.decoder.fold("state")
    assert folded.state == "state" and folded.weight is None and folded.bias is None
    with pytest.raises(NotImplementedError, match="declares no output fold"):
        model.decoder.attention.step_context(torch.zeros(1, 32), None)
