"""The head fold: the integration MLP's last linear layer and the output layer, with nothing between them, run
as one map made once per decode (``Decoder.fold``). The model computes the same function, outputs and every
gradient, with the fold on as off (``Decoder.fold_head``), through every decode path."""

from __future__ import annotations

import copy

import pytest
import torch

import quatrain
from tests.conftest import random_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _outputs_and_grads(model, x, mask, teacher_forcing):
    torch.manual_seed(1)  # the same coins and dropout masks for both models
    out = model(x, mask, teacher_forcing=teacher_forcing).reconstruction
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)
    return out, torch.autograd.grad((out * weights).sum(), list(model.parameters()))


@pytest.mark.parametrize("teacher_forcing", [0.0, 0.6, 1.0], ids=["autoregressive", "sampled", "parallel"])
@pytest.mark.parametrize("backend", [None, "naive", "cached-decoder"], ids=["no-attention", "naive", "cached"])
@pytest.mark.parametrize("engine", ["steps", "stretches"])
def test_the_head_fold_computes_the_same_function(registry, backend, teacher_forcing, engine):
    """float64, dropout on: the folded head's outputs and gradients equal those of the two layers applied in
    turn; 'naive' has no output fold (its integration layer runs as it is), 'cached-decoder' has one."""
    config = quatrain.ModelConfig.preset("tiny", dropout=0.1, attention="none" if backend is None else "encoder")
    torch.manual_seed(0)
    folded = quatrain.Autoencoder(config, backend, engine=engine).double()
    unfolded = copy.deepcopy(folded)
    unfolded.decoder.fold_head = False
    x, mask = random_batch(config, [7, 3, 1, 0, 5], T=7)
    x = x.double()
    out_f, grads_f = _outputs_and_grads(folded, x, mask, teacher_forcing)
    out_u, grads_u = _outputs_and_grads(unfolded, x, mask, teacher_forcing)
    torch.testing.assert_close(out_f, out_u, rtol=1e-10, atol=1e-12)
    names = [n for n, _ in folded.named_parameters()]
    for name, got, want in zip(names, grads_f, grads_u, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)
    grads = dict(zip(names, grads_f, strict=True))
    # both folded layers learn through the product, their biases too
    for name in ("decoder.integrate.3.weight", "decoder.integrate.3.bias", "decoder.out.weight", "decoder.out.bias"):
        assert grads[name].abs().sum() > 0, name


def test_the_head_is_folded_when_attention_weights_are_asked_for_too(registry):
    """With weights asked for, the backend's output weight stays out of the integration layer (its step returns
    the weights with its own output) but the head is folded all the same, and the result is unchanged."""
    config = quatrain.ModelConfig.preset("tiny")
    model = quatrain.Autoencoder(config, "cached-decoder").double().eval()
    folded = model.decoder.fold("state", need_weights=True)
    assert folded.weight is None and folded.head is not None
    assert folded.head.shape == (config.embed_dim, config.hidden_size) and folded.head_bias.shape == (config.embed_dim,)
    x, mask = random_batch(config, [6, 4], T=6)
    with torch.no_grad():
        plain = model(x.double(), mask).reconstruction
        with_weights = model(x.double(), mask, need_weights=True)
    assert with_weights.attention is not None
    torch.testing.assert_close(with_weights.reconstruction, plain, rtol=1e-10, atol=1e-12)


def test_the_folded_head_is_the_product_of_the_two_layers(registry):
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny"), "naive").double()
    last, out = model.decoder.integrate[-1], model.decoder.out
    folded = model.decoder.fold(None)
    h = torch.randn(3, model.config.hidden_size, dtype=torch.float64)
    torch.testing.assert_close(h @ folded.head.t() + folded.head_bias, out(last(h)), rtol=1e-12, atol=1e-12)
    model.decoder.fold_head = False
    assert model.decoder.fold(None).head is None
