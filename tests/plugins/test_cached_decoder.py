"""cached-decoder: K and V are projected once per sequence, with autograd; SDPA reports its kernel."""

from __future__ import annotations

import torch

import quatrain
from tests.conftest import random_batch


def test_kv_projected_once_per_sequence_with_autograd(registry, tiny):
    model = quatrain.Autoencoder(tiny, "cached-decoder")
    calls = []
    model.decoder.attention.w_kv.register_forward_hook(lambda module, args, out: calls.append(out.requires_grad))
    x, mask = random_batch(tiny, [7, 4, 1])
    out = model(x, mask, teacher_forcing=0.5).reconstruction  # sequential: 7 steps
    assert calls == [True]  # one projection, part of the graph
    out.sum().backward()
    assert model.decoder.attention.w_kv.weight.grad.abs().sum() > 0


def test_fully_masked_row_gives_zero_context_and_finite_gradients(registry):
    attention = registry.backend("cached-decoder").cls(16, 4)
    memory = torch.randn(2, 5, 16, requires_grad=True)
    key_mask = torch.tensor([[False] * 5, [True, True, False, False, False]])
    query = torch.randn(2, 16, requires_grad=True)
    context, _ = attention.step(query, attention.prepare(memory, key_mask))
    assert torch.equal(context[0], torch.zeros(16))
    context.sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(query.grad).all()


def test_kernel_pytorch_picked_is_recorded(registry):
    attention = registry.backend("cached-decoder").cls(16, 4)
    assert attention.kernel is None
    attention.prepare(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    assert attention.kernel == "flash"  # the fused CPU kernel takes a mask in every dtype (torch 2.13)
