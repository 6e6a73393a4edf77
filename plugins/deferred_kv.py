"""``deferred-kv``: K and V once per sequence, single-query bmm attention per step, K/V gradients deferred.

K and V are fixed over a decode, so their per-step gradients can wait: each step's backward computes only
the query's gradient and records its softmax ``P_t``, the score gradient ``dS_t``, its scaled query ``Q_t``
and the incoming ``dO_t``; after the last step's backward, one batched product gives
``dV = sum_t P_t^T dO_t`` and ``dK = sum_t dS_t^T Q_t`` (instead of a full-size dK and dV written and
accumulated at every step). The forward of a step is a plain ``matmul``-softmax-``matmul`` for the one
query (no SDPA kernel selection). The parallel path (teacher forcing 1.0, and the stretches of forced steps
on CPU) is the cached decoder's SDPA. Layout ``q-kv-o``, like ``cached-decoder``.
tests/plugins/test_deferred_kv.py checks it against naive (the conformance kit) and the deferred gradients
against autograd's.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from quatrain import Capabilities, hookimpl

from ._attention import SDPA_KERNEL_NOTES, Keys, attend, keys, merge_heads, prepare_mask, probe_kernel, split_heads
from .cached_decoder import CachedDecoderAttention


class Record(NamedTuple):
    """What one step's backward leaves for the deferred K/V product."""

    p: Tensor
    """(B, h, 1, S) the step's attention weights."""
    do: Tensor
    """(B, h, 1, d) the gradient of its context."""
    ds: Tensor
    """(B, h, 1, S) the gradient of its scores."""
    q: Tensor
    """(B, h, 1, d) its query, scaled by 1/sqrt(d)."""


class DeferredKeys(NamedTuple):
    """The state of one prepared sequence: K and V (through ``_Defer``), the mask, the shared records."""

    keys: Keys
    """K and V split into heads (views of the projection), for the parallel path and for weights."""
    k_t: Tensor
    """(B, h, d, S) K transposed, contiguous: what each single-query step multiplies with."""
    v: Tensor
    """(B, h, S, d) V, contiguous, zero on rows without keys (so their contexts are zero)."""
    bias: Tensor
    """(B, 1, 1, S) additive score mask: 0 where attended, -inf elsewhere (fully masked rows opened up)."""
    records: list[Record]


class _Defer(torch.autograd.Function):
    """Identity on K and V whose backward adds the deferred per-step gradients in one batched product.

    Autograd runs it after every step that read K and V has run its backward (they are its consumers), so
    ``records`` then holds every step's share.
    """

    @staticmethod
    def forward(ctx: Any, k: Tensor, v: Tensor, records: list[Record]) -> tuple[Tensor, Tensor]:
        ctx.records = records
        ctx.set_materialize_grads(False)
        return k.view_as(k), v.view_as(v)

    @staticmethod
    def backward(ctx: Any, dk: Tensor | None, dv: Tensor | None) -> tuple[Tensor | None, Tensor | None, None]:
        records: list[Record] = ctx.records
        if records:
            p, do, ds, q = (torch.cat(parts, dim=2) for parts in zip(*records, strict=True))  # (B, h, N, .)
            records.clear()
            # The steps keep P and dS in float32 whatever the dtype (their backwards read P back): the products
            # run in the gradients' dtype, one cast per decode.
            p, ds = p.to(do.dtype), ds.to(q.dtype)
            dk_steps = ds.transpose(-2, -1) @ q  # (B, h, S, d) = sum_t dS_t^T Q_t
            dv_steps = p.transpose(-2, -1) @ do  # (B, h, S, d) = sum_t P_t^T dO_t
            dk = dk_steps if dk is None else dk + dk_steps
            dv = dv_steps if dv is None else dv + dv_steps
        return dk, dv, None


class _SingleQuery(torch.autograd.Function):
    """One query per row against fixed K, V: forward as matmul-softmax-matmul, backward only for the query."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k_t: Tensor, v: Tensor, bias: Tensor, records: list[Record]) -> Tensor:
        scaled = q * (1.0 / math.sqrt(q.shape[-1]))  # (B, h, 1, d)
        # P in float32 whatever the dtype (the backward's dS comes from it), as CUDA's autocast runs a softmax
        # anyway (CPU's does not): one dtype on every device, so what the CPU tests check is what CUDA runs.
        p = torch.softmax((scaled @ k_t + bias).float(), dim=-1)  # (B, h, 1, S); V is zero on rows without keys
        ctx.save_for_backward(scaled, k_t, v, p)
        ctx.records = records
        return p.to(v.dtype) @ v  # (B, h, 1, d)

    @staticmethod
    def backward(ctx: Any, do: Tensor) -> tuple[Tensor, None, None, None, None]:
        scaled, k_t, v, p = ctx.saved_tensors
        dp = (do @ v.transpose(-2, -1)).float()  # (B, h, 1, S)
        # Softmax backward, p * (dp - sum(dp * p)), by torch's own kernel, in float32 as P is; on rows without
        # keys V is zero, so dp, and their score gradient, are zero.
        ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
        ctx.records.append(Record(p, do, ds, scaled))  # the deferred product casts P and dS once per decode
        dq = (ds.to(k_t.dtype) @ k_t.transpose(-2, -1)) * (1.0 / math.sqrt(scaled.shape[-1]))
        return dq, None, None, None, None


class DeferredKVAttention(CachedDecoderAttention):
    name = "deferred-kv"
    capabilities = Capabilities(
        layout="q-kv-o",
        devices=("cpu", "cuda"),
        # matmul, softmax and cat only (no atomics); the parallel path's SDPA backward on CUDA may use
        # atomics (PyTorch's SDPA docs), so, as for cached-decoder, no bit-reproducibility is promised there.
        deterministic=False,
        notes=(
            "K and V are projected once per sequence (with autograd); each step is a single-query "
            "matmul-softmax-matmul; each step's backward computes only the query's gradient, and dK, dV come "
            "from one batched product over all steps after the last step's backward",
            "the parallel path (teacher forcing 1.0, forced stretches on CPU) is SDPA, as in cached-decoder",
            "w_o is folded into the decoder's integration layer once per decode (AttentionBackend.output_weight)",
            "need_weights=True takes the explicit softmax with ordinary autograd",
            *SDPA_KERNEL_NOTES,
        ),
    )

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:  # a DeferredKeys (the parent's is Keys)
        return self._deferred_keys(memory, key_mask, matmul_layouts=True)

    def _deferred_keys(self, memory: Tensor, key_mask: Tensor, matmul_layouts: bool) -> DeferredKeys:
        """The prepared sequence; ``matmul_layouts``: copy K^T and V into the layouts the single-query
        matmuls read fastest, else leave them views (for steps that read K and V through their strides)."""
        k, v = self.w_kv(memory).chunk(2, dim=-1)  # (B, S, H) each, once per sequence
        # The mask in K's dtype, not the memory's: under bf16 autocast the projection is bfloat16 and the
        # memory float32, and a float32 mask would promote V and the scores back to float32.
        state = keys(k, v, prepare_mask(key_mask, k.dtype), self.num_heads, zero_empty=True)
        probe_kernel(self, state)
        records: list[Record] = []
        if torch.is_grad_enabled() and (state.k.requires_grad or state.v.requires_grad):
            k_steps, v_steps = _Defer.apply(state.k, state.v, records)
            state = state._replace(k=k_steps, v=v_steps)
        bias = torch.zeros_like(state.mask.has_key).expand(-1, -1, -1, k.shape[1])
        bias = bias.masked_fill(~state.mask.attn_mask, float("-inf"))  # (B, 1, 1, S)
        # One copy per sequence into the layouts a single-query matmul reads fastest (a strided K^T or V
        # would be copied by every step's matmul on CPU).
        k_t, v_steps = state.k.transpose(-2, -1), state.v
        if matmul_layouts:
            k_t, v_steps = k_t.contiguous(), v_steps.contiguous()
        return DeferredKeys(state, k_t, v_steps, bias, records)

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q = split_heads(self.w_q(query).unsqueeze(1), self.num_heads)  # (B, h, 1, d)
        if need_weights:
            context, weights = attend(q, state.keys, True)
        else:
            context = _SingleQuery.apply(q, state.k_t, state.v, state.bias, state.records)
            weights = None
        return self.w_o(merge_heads(context)).squeeze(1), (weights.squeeze(2) if weights is not None else None)

    def step_context(self, query: Tensor, state: Any) -> Tensor:
        q = split_heads(self.w_q(query).unsqueeze(1), self.num_heads)
        return merge_heads(_SingleQuery.apply(q, state.k_t, state.v, state.bias, state.records)).squeeze(1)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        return super().parallel(queries, state.keys, need_weights)

    def parallel_context(self, queries: Tensor, state: Any) -> Tensor:
        return super().parallel_context(queries, state.keys)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(DeferredKVAttention)
