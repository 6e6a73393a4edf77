"""``triton-step``: ``deferred-kv`` with each decoder step's single-query attention as one Triton kernel.

``deferred-kv`` runs a step's attention as five kernels (scale, scores, mask, softmax, context) and its
backward as four; at the seed preset on an H200 those small kernels, not arithmetic, are most of
what attention adds to a step. Here the forward is one kernel (scores, mask, softmax and context of every
(row, head), written beside a copy of the query: what the folded integration layer reads, so no
concatenation runs per step) and the backward one more (the query's gradient and dS), both in float32
whatever the storage dtype (plugins/_triton_kernels.py). The query projection's weight
gradient is deferred as K and V's are (``quatrain._deferred``, as the decoder does for its own layers): each
step's backward leaves (dq, query), and one product after the last step gives dWq. Everything else is
``deferred-kv``'s: K and V projected once per sequence, their gradients from one batched product after
the last step, ``w_o`` folded into the integration layer, SDPA for the parallel path. Where the kernels
do not apply (not CUDA, float64, a memory longer than ``MAX_KEYS``, weights asked for) a step takes
``deferred-kv``'s matmul path. Under Triton's interpreter (``TRITON_INTERPRET=1``) the kernels also run
on CPU tensors, which is how tests/plugins/test_triton_step.py checks their math without a GPU.
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


class _JoinedStep(torch.autograd.Function):
    """A step's attention by the Triton kernels: query (B, H) -> ``[query | merged contexts]`` (B, 2H).

    The query projection is one matrix product here and its input's gradient one more in the backward,
    added in place to the copy the kernel makes of the query's own gradient (no separate sum). K and V's
    gradients are deferred (``records``); so is ``w_q``'s when ``w_records`` is a list (a ``DeferredLinears``
    list: one product over all steps' (dq, query) after the last step).
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: Tensor,
        w_q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: Tensor,
        records: list[Record],
        w_records: list[tuple[Tensor, Tensor]] | None,
    ) -> Tensor:
        from . import _triton_kernels

        training = any(ctx.needs_input_grad[:4])  # query, w_q, K or V: the backward needs P either way
        q = query @ w_q.t()
        joined, p, scaled = _triton_kernels.forward(query, q, k, v, bias, training)
        if training:
            ctx.save_for_backward(query, w_q, k, v, p, scaled)
            ctx.records, ctx.w_records = records, w_records
        return joined

    @staticmethod
    def backward(ctx: Any, dj: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None, None, None]:
        from . import _triton_kernels

        query, w_q, k, v, p, scaled = ctx.saved_tensors
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
        return (dx if ctx.needs_input_grad[0] else None), dw, None, None, None, None, None


class StepKeys(NamedTuple):
    """deferred-kv's state of a prepared sequence, with the query weight the kernel steps project through."""

    deferred: DeferredKeys
    kernel: bool
    """The steps run the Triton kernels (else deferred-kv's matmul path)."""
    linear: Linear
    """How the steps apply ``w_q``: a ``DeferredLinears`` when training (its weight gradient summed once after
    the last step), else ``F.linear``."""


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
            "the query projection is one matrix product; the kernel writes the query beside its contexts, what the "
            "folded integration layer reads (AttentionBackend.step_joined), so no concatenation runs per step",
            "w_q's weight gradient is deferred too: one product over every step's (dq, query) after the last step",
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
        return StepKeys(state, kernel, DeferredLinears() if defer else F.linear)

    def step_joined(self, query: Tensor, state: Any) -> Tensor:
        if not state.kernel:
            return torch.cat([query, super().step_context(query, state.deferred)], dim=-1)
        deferred = state.deferred
        w_q, w_records = self.w_q.weight, None
        if isinstance(state.linear, DeferredLinears):
            w_q, _, w_records = state.linear.views(w_q)
        bias = deferred.bias[:, 0, 0, :]  # (B, S)
        return _JoinedStep.apply(query, w_q, deferred.keys.k, deferred.keys.v, bias, deferred.records, w_records)

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if need_weights or not state.kernel:
            return super().step(query, state.deferred, need_weights)
        return self.w_o(self.step_context(query, state)), None

    def step_context(self, query: Tensor, state: Any) -> Tensor:
        if not state.kernel:
            return super().step_context(query, state.deferred)
        return self.step_joined(query, state)[:, self.hidden_size :]

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        return super().parallel(queries, state.deferred, need_weights)

    def parallel_context(self, queries: Tensor, state: Any) -> Tensor:
        return super().parallel_context(queries, state.deferred)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(TritonStepAttention)
