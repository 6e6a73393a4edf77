"""``triton-step``: ``deferred-kv`` with each decoder step's single-query attention as one Triton kernel.

``deferred-kv`` runs a step's attention as five kernels (scale, scores, mask, softmax, context) and its
backward as four; at the seed preset on an H200 those small kernels, not arithmetic, are most of
what attention adds to a step. Here the forward is one kernel (scores, mask, softmax and context of every
(row, head), written beside a copy of the query) and the backward one more (the query's gradient and dS),
both in float32 whatever the storage dtype (plugins/_triton_kernels.py). The step also computes the first
layer of the decoder's folded integration MLP (``AttentionBackend.step_integrated``): one product gives the
projected query and the query's share of that layer (``query @ [w_q; W_query]^T``), and the context half's
product is added to it in place, so no concatenated input is built and no product runs over the doubled
width. The query projection's and the folded layer's weight gradients are deferred as K and V's are
(``quatrain._deferred``, as the decoder does for its own layers): each step's backward leaves its shares, and
one product after the last step gives each weight's gradient. Everything else is ``deferred-kv``'s: K and V
projected once per sequence, their gradients from one batched product after the last step, ``w_o`` folded
into the integration layer, SDPA for the parallel path. Where the kernels do not apply (not CUDA, float64, a
memory longer than ``MAX_KEYS``, weights asked for) a step takes ``deferred-kv``'s matmul path. Under
Triton's interpreter (``TRITON_INTERPRET=1``) the kernels also run on CPU tensors, which is how
tests/plugins/test_triton_step.py checks their math without a GPU.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from quatrain import Capabilities, hookimpl
from quatrain._deferred import DeferredLinears, Linear

from ._attention import SDPA_KERNEL_NOTES
from .deferred_kv import DeferredKeys, DeferredKVAttention, Record

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_KEYS = 1024
"""Longest memory the kernels take (they hold the key axis in one tile)."""
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's interpreter is on: its kernels run on CPU tensors too."""


class Integration(NamedTuple):
    """The decoder's folded integration layer as a step applies it, made once per decode
    (``TritonStepAttention.step_integrated``)."""

    weight: Tensor
    """(H, 2H) the folded weight as the steps read it (a ``DeferredLinears`` view when deferring)."""
    bias: Tensor
    """(H,) its bias, likewise."""
    records: list[tuple[Tensor, Tensor]] | None
    """Where each step's (dh, [query | contexts]) goes for the weight's deferred gradient; None: the step's
    backward gives the weight's and bias's gradients itself."""
    stacked: Tensor
    """(2H, H) ``[w_q; the weight's query half]``, without autograd history: one product gives the projected
    query and the query's share of the layer."""
    stacked_bias: Tensor
    """(2H,) ``[0; bias]``."""
    context_weight: Tensor
    """(H, H) the weight's context half, without autograd history."""
    source: Tensor
    """The folded weight it was made from (the cache's check)."""


def _add_context(share: Tensor, contexts: Tensor, weight: Tensor) -> Tensor:
    """The layer's output: the query's share (a view of the stacked product) plus ``contexts @ weight^T``,
    added in place."""
    return share.addmm_(contexts, weight.t())


class _Step(torch.autograd.Function):
    """A step's attention by the Triton kernels, with the folded integration layer's first map when
    ``integration`` is given: query (B, H) -> that layer's output (B, H); else -> ``[query | merged
    contexts]`` (B, 2H).

    With the layer, the forward is one product ``query @ [w_q; W_query]^T`` (the projected query beside the
    query's share of the layer), the kernel, and the context half's product added in place to that share: two
    products over H, where a projection and a product over the doubled input 2H ran before (cuBLAS takes the
    deeper one for a split-K kernel). The backward is the layer's input gradient ``dh @ W`` (the joined
    gradient the kernel reads), the kernel, and the projection's input gradient added in place to the
    kernel's copy of the query's own share. K and V's gradients are deferred (``records``); so are ``w_q``'s
    and the folded weight's when their record lists are given (one product over all steps after the last).
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: Tensor,
        w_q: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        k: Tensor,
        v: Tensor,
        key_bias: Tensor,
        records: list[Record],
        w_records: list[tuple[Tensor, Tensor]] | None,
        integration: Integration | None,
    ) -> Tensor:
        from . import _triton_kernels

        training = any(ctx.needs_input_grad[:6])  # query, w_q, the layer or K, V: the backward needs P either way
        H = query.shape[-1]
        if integration is None:
            q = query @ w_q.t()
        else:
            qu = F.linear(query, integration.stacked, integration.stacked_bias)  # [q | the layer's query share]
            q = qu[:, :H]
        joined, p, scaled = _triton_kernels.forward(query, q, k, v, key_bias, training)
        out = joined
        if integration is not None:
            out = _add_context(qu[:, H:], joined[:, H:], integration.context_weight.to(qu.dtype))
        if training:
            ctx.save_for_backward(query, w_q, k, v, p, scaled, joined, weight)
            ctx.records, ctx.w_records = records, w_records
            ctx.fold_records = integration.records if integration is not None else None
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        from . import _triton_kernels

        query, w_q, k, v, p, scaled, joined, weight = ctx.saved_tensors
        dw_layer = db_layer = None
        if weight is not None:  # the layer ran: its input's gradient is what the kernel reads
            dj = grad @ weight.to(grad.dtype)
            if ctx.fold_records is not None:
                ctx.fold_records.append((grad, joined))
            else:
                dw_layer = grad.t() @ joined.to(grad.dtype) if ctx.needs_input_grad[2] else None
                db_layer = grad.sum(0) if ctx.needs_input_grad[3] else None
        else:
            dj = grad
        dx, dq, ds = _triton_kernels.backward(dj, p, k, v)
        # Under autocast the projection ran in dj's dtype (query and w_q may be float32): so do its gradients.
        query, w_q = query.to(dj.dtype), w_q.to(dj.dtype)
        B, h, _, d = k.shape
        heads = (B, 1, h, d)  # a (B, H) tensor seen as the (B, h, 1, d) a record holds
        do_heads, q_heads = dj[:, h * d :].reshape(heads).transpose(1, 2), scaled.view(heads).transpose(1, 2)
        ctx.records.append(Record(p.unsqueeze(2), do_heads, ds.unsqueeze(2), q_heads))
        dw = None
        if ctx.needs_input_grad[1]:
            if ctx.w_records is not None:
                ctx.w_records.append((dq, query))
            else:
                dw = dq.t() @ query
        if ctx.needs_input_grad[0]:
            dx.addmm_(dq, w_q)  # the query's two shares: its own (the kernel's copy) and the projection's
        return (dx if ctx.needs_input_grad[0] else None), dw, dw_layer, db_layer, None, None, None, None, None, None


class StepKeys(NamedTuple):
    """deferred-kv's state of a prepared sequence, with the query weight the kernel steps project through."""

    deferred: DeferredKeys
    kernel: bool
    """The steps run the Triton kernels (else deferred-kv's matmul path)."""
    linear: Linear
    """How the steps apply ``w_q``: a ``DeferredLinears`` when training (its weight gradient summed once after
    the last step), else ``F.linear``."""
    integrations: list[Integration]
    """The folded integration layer as the steps apply it, made at the decode's first step."""


class TritonStepAttention(DeferredKVAttention):
    name = "triton-step"
    capabilities = Capabilities(
        layout="q-kv-o",
        devices=("cuda",),
        requires=("triton",),
        # The kernels use no atomics; the parallel path's SDPA backward may (see cached-decoder).
        deterministic=False,
        warmup="Triton compiles its two kernels once per shape class (cached on disk by Triton)",
        notes=(
            "each decoder step's attention is one Triton kernel forward (scores, mask, softmax, context, in "
            "float32) and one backward (the query's gradient and dS); K and V are read in place, once per step",
            "the step computes the folded integration layer's first map (AttentionBackend.step_integrated): one "
            "product gives the projected query and the query's share of the layer, the context half's product is "
            "added in place (no concatenation, no product over the doubled input)",
            "w_q's and the folded layer's weight gradients are deferred too: one product each over every step's "
            "shares after the last step",
            "otherwise deferred-kv: K/V projected once per sequence, their gradients from one batched product "
            "after the last step, w_o folded into the integration layer",
            f"steps take deferred-kv's matmul path on float64, for memories over {MAX_KEYS} keys, and when "
            "weights are asked for (the explicit softmax)",
            "the parallel path (teacher forcing 1.0) is SDPA, as in cached-decoder",
            *SDPA_KERNEL_NOTES,
        ),
    )

    step_path: str | None
    """'triton' or 'matmul': how the steps over the last prepared batch run (None before the first)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        self.step_path = None

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:  # a StepKeys (the parent's is DeferredKeys)
        kernel = (memory.is_cuda or INTERPRETED) and memory.dtype in KERNEL_DTYPES and memory.shape[1] <= MAX_KEYS
        # The kernels read K and V in place: no per-sequence copies into the matmul path's layouts.
        state = self._deferred_keys(memory, key_mask, matmul_layouts=not kernel)
        self.step_path = "triton" if kernel else "matmul"
        defer = kernel and torch.is_grad_enabled() and self.w_q.weight.requires_grad
        return StepKeys(state, kernel, DeferredLinears() if defer else F.linear, [])

    def step_integrated(
        self, query: Tensor, state: Any, weight: Tensor, bias: Tensor, linear: Linear = F.linear
    ) -> Tensor:
        if not state.kernel:
            return super().step_integrated(query, state, weight, bias, linear)
        return self._step(query, state, self._integration(query, state, weight, bias, linear))

    def _integration(self, query: Tensor, state: StepKeys, weight: Tensor, bias: Tensor, linear: Linear) -> Integration:
        """The decode's ``Integration`` for ``weight``: made at its first step (a concatenation of two weights),
        then reused by every step."""
        for made in state.integrations:
            if made.source is weight:
                return made
        records = None
        if isinstance(linear, DeferredLinears):
            weight_view, bias_view, records = linear.views(weight, bias)
        else:
            weight_view, bias_view = weight, bias
        assert bias_view is not None
        H = self.hidden_size
        with torch.no_grad():
            stacked, stacked_bias = torch.cat([self.w_q.weight, weight[:, :H]]), torch.cat([bias.new_zeros(H), bias])
            context_weight = weight[:, H:]
            if torch.is_autocast_enabled(query.device.type):  # cast once per decode, not at every step
                dtype = torch.get_autocast_dtype(query.device.type)
                stacked, stacked_bias, context_weight = (t.to(dtype) for t in (stacked, stacked_bias, context_weight))
        made = Integration(weight_view, bias_view, records, stacked, stacked_bias, context_weight, source=weight)
        state.integrations.append(made)
        return made

    def _step(self, query: Tensor, state: StepKeys, integration: Integration | None) -> Tensor:
        deferred = state.deferred
        w_q, w_records = self.w_q.weight, None
        if isinstance(state.linear, DeferredLinears):
            w_q, _, w_records = state.linear.views(w_q)
        weight, bias = (integration.weight, integration.bias) if integration is not None else (None, None)
        key_bias = deferred.bias[:, 0, 0, :]  # (B, S)
        k, v = deferred.keys.k, deferred.keys.v
        return _Step.apply(query, w_q, weight, bias, k, v, key_bias, deferred.records, w_records, integration)

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if need_weights or not state.kernel:
            return super().step(query, state.deferred, need_weights)
        return self.w_o(self.step_context(query, state)), None

    def step_context(self, query: Tensor, state: Any) -> Tensor:
        if not state.kernel:
            return super().step_context(query, state.deferred)
        return self._step(query, state, None)[:, self.hidden_size :]

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        return super().parallel(queries, state.deferred, need_weights)

    def parallel_context(self, queries: Tensor, state: Any) -> Tensor:
        return super().parallel_context(queries, state.deferred)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(TritonStepAttention)
