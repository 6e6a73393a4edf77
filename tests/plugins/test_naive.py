"""The naive backend against an independent, plain-tensor computation of the attention formula."""

from __future__ import annotations

import math

import pytest
import torch

from quatrain.plugins.naive import NaiveAttention


def reference_attention(attn: NaiveAttention, queries, memory, key_mask):
    """DESIGN.md's formula, written out with explicit loops over batch and heads."""
    B, T, H = queries.shape
    h = attn.num_heads
    d = H // h
    Q = queries @ attn.w_q.weight.T
    K = memory @ attn.w_k.weight.T
    V = memory @ attn.w_v.weight.T
    out = torch.zeros(B, T, H, dtype=torch.float64)
    for b in range(B):
        keys = key_mask[b].nonzero().flatten()
        if len(keys) == 0:
            continue  # an all-masked row gives a zero context (before Wo, which has no bias)
        for j in range(h):
            sl = slice(j * d, (j + 1) * d)
            scores = Q[b, :, sl] @ K[b, keys, sl].T / math.sqrt(d)  # (T, n)
            out[b, :, sl] = torch.softmax(scores, dim=-1) @ V[b, keys, sl]
    return out @ attn.w_o.weight.T


@pytest.mark.parametrize("heads", [1, 4])
def test_naive_matches_the_formula(heads):
    torch.manual_seed(1)
    attn = NaiveAttention(16, heads).double()
    B, T, S = 4, 5, 7
    queries, memory = torch.randn(B, T, 16, dtype=torch.float64), torch.randn(B, S, 16, dtype=torch.float64)
    key_mask = torch.rand(B, S) < 0.6
    key_mask[0] = True
    key_mask[3] = False  # one row with every key masked
    state = attn.prepare(memory, key_mask)
    expected = reference_attention(attn, queries, memory, key_mask)

    parallel, weights = attn.parallel(queries, state, need_weights=True)
    torch.testing.assert_close(parallel, expected, rtol=1e-12, atol=1e-12)
    for t in range(T):
        step, _ = attn.step(queries[:, t], state)
        torch.testing.assert_close(step, expected[:, t], rtol=1e-12, atol=1e-12)
    assert weights is not None and weights.shape == (B, heads, T, S)
    assert torch.all(weights[~key_mask[:, None, None, :].expand_as(weights)] == 0)


def test_all_masked_row_gives_zeros_and_finite_gradients():
    attn = NaiveAttention(8, 2)
    queries = torch.randn(2, 3, 8, requires_grad=True)
    memory = torch.randn(2, 4, 8, requires_grad=True)
    key_mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    context, weights = attn.parallel(queries, attn.prepare(memory, key_mask), need_weights=True)
    assert torch.equal(context[1], torch.zeros(3, 8))
    assert torch.equal(weights[1], torch.zeros_like(weights[1]))
    context.sum().backward()
    for tensor in (queries.grad, memory.grad, *(p.grad for p in attn.parameters())):
        assert tensor is not None and torch.isfinite(tensor).all()
