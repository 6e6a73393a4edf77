"""Triton kernels of ``triton-step``: one decoder step's single-query attention, forward and backward.

One program per (row, head): the projected query (d,) against that row's keys and values (S, d), read in
place through their strides (the split-heads views of the K/V projection, no copy). The forward writes
what the decoder's folded integration layer reads, the query beside its merged-heads context, (B, 2H),
so no concatenation runs per step, and, when training, the softmax P and the scaled query that the
deferred K/V product (``deferred_kv._Defer``) needs; the backward writes the projected query's gradient,
the score gradient dS and a copy of the query's own share of its gradient (the joined gradient's left
half), to which the caller adds the projection's share in place. Everything is computed in float32,
whatever the storage dtype; the head dimension (a compile-time constant) is walked in chunks, so any head
size runs with the key axis held in one tile (the backend sends memories of at most ``triton_step.MAX_KEYS`` keys).
Imported only when the kernels run (``triton-step`` declares ``requires=("triton",)``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

_TILE = 8192
"""Elements of one (keys x head-chunk) tile, which sets the chunk of the head dimension."""


class Launch(NamedTuple):
    """How the kernels are launched for one shape. ``launch`` picks it; benchmarks/kernel_ab.py times the
    others and tests/plugins/test_triton_kernels.py checks them."""

    block_d: int
    """Chunk of the head dimension (a power of two, at least 16): the whole head when it fits the tile."""
    num_warps: int
    prefetch: bool
    """Where the head is one chunk, load K's and V's tiles together at the start (both held at once), so a
    program need not wait on memory twice (without it the second tile's load waits behind the softmax). Not
    the default: on an H100 (benchmarks/kernel_ab.py, benchmarks/gpu-2026-12-07/run9/kernel-ab.txt) it took
    batch 32's forward with training outputs from 3.94 to 3.59 µs and the backward from 3.55 to 3.35, but the
    whole train step only from 11.50 to 11.40 ms and inference not at all, and it slowed batch 256's inference
    forward from 21.98 to 24.40 µs."""


def launch(num_keys: int, head_dim: int) -> Launch:
    """The launch the kernels take by default for ``num_keys`` keys of ``head_dim``."""
    block_d = max(16, min(triton.next_power_of_2(head_dim), _TILE // _block_s(num_keys)))
    return Launch(block_d, num_warps=4, prefetch=False)


def _block_s(num_keys: int) -> int:
    return max(16, triton.next_power_of_2(num_keys))


def _checked(how: Launch) -> Launch:
    """A launch passed in (the default one needs no check)."""
    if how.block_d < 16 or how.block_d & (how.block_d - 1):
        raise ValueError(f"block_d must be a power of two of at least 16, not {how.block_d}")
    return how


def _prefetch(how: Launch, head_dim: int) -> bool:
    """The kernels' PREFETCH: asked for, and the head one chunk (else there is no one tile to load early)."""
    return how.prefetch and how.block_d >= head_dim


@triton.jit
def _forward(
    x_ptr, q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, p_ptr, qs_ptr,
    num_heads, num_keys, scale,
    sxb, sqb, skb, skh, sks, svb, svh, svs, sbb, sbs,
    head_dim: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, TRAINING: tl.constexpr,
    PREFETCH: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0) // num_heads
    head = tl.program_id(0) % num_heads
    s = tl.arange(0, BLOCK_S)
    s_in = s < num_keys
    q_row = q_ptr + row * sqb + head * head_dim
    x_row = x_ptr + row * sxb + head * head_dim
    hidden = head_dim * num_heads
    out_row = out_ptr + row * 2 * hidden + head * head_dim  # [query | context]: this head's slice of each half
    k_rows = k_ptr + row * skb + head * skh + s[:, None] * sks
    v_rows = v_ptr + row * svb + head * svh + s[:, None] * svs
    if PREFETCH:  # one chunk: V's tile is loaded beside K's, before the softmax needs it
        d = tl.arange(0, BLOCK_D)
        v_all = tl.load(v_rows + d[None, :], mask=s_in[:, None] & (d < head_dim)[None, :], other=0.0).to(tl.float32)
    scores = tl.zeros([BLOCK_S], dtype=tl.float32)
    for d0 in range(0, head_dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_in = d < head_dim
        q = tl.load(q_row + d, mask=d_in, other=0.0).to(tl.float32) * scale
        k = tl.load(k_rows + d[None, :], mask=s_in[:, None] & d_in[None, :], other=0.0).to(tl.float32)
        scores += tl.sum(k * q[None, :], axis=1)
        tl.store(out_row + d, tl.load(x_row + d, mask=d_in), mask=d_in)  # the query, copied beside its context
        if TRAINING:
            tl.store(qs_ptr + row * head_dim * num_heads + head * head_dim + d, q, mask=d_in)
    bias = tl.load(bias_ptr + row * sbb + s * sbs, mask=s_in, other=float("-inf")).to(tl.float32)
    scores = scores + bias
    e = tl.exp(scores - tl.max(scores, axis=0))
    p = e / tl.sum(e, axis=0)
    if TRAINING:
        tl.store(p_ptr + (row * num_heads + head) * num_keys + s, p, mask=s_in)
    if PREFETCH:
        d = tl.arange(0, BLOCK_D)
        tl.store(out_row + hidden + d, tl.sum(v_all * p[:, None], axis=0), mask=d < head_dim)
    else:
        for d0 in range(0, head_dim, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_in = d < head_dim
            v = tl.load(v_rows + d[None, :], mask=s_in[:, None] & d_in[None, :], other=0.0).to(tl.float32)
            context = tl.sum(v * p[:, None], axis=0)
            tl.store(out_row + hidden + d, context, mask=d_in)


@triton.jit
def _backward(
    dj_ptr, p_ptr, k_ptr, v_ptr, dx_ptr, dq_ptr, ds_ptr,
    num_heads, num_keys, scale,
    sdb, skb, skh, sks, svb, svh, svs,
    head_dim: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0) // num_heads
    head = tl.program_id(0) % num_heads
    s = tl.arange(0, BLOCK_S)
    s_in = s < num_keys
    hidden = head_dim * num_heads
    dx_row = dj_ptr + row * sdb + head * head_dim  # the joined gradient: [query's own part | context's]
    do_row = dx_row + hidden
    k_rows = k_ptr + row * skb + head * skh + s[:, None] * sks
    v_rows = v_ptr + row * svb + head * svh + s[:, None] * svs
    if PREFETCH:  # one chunk: K's tile is loaded beside V's, before dS is known
        d = tl.arange(0, BLOCK_D)
        k_all = tl.load(k_rows + d[None, :], mask=s_in[:, None] & (d < head_dim)[None, :], other=0.0).to(tl.float32)
    dp = tl.zeros([BLOCK_S], dtype=tl.float32)
    for d0 in range(0, head_dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_in = d < head_dim
        do = tl.load(do_row + d, mask=d_in, other=0.0).to(tl.float32)
        v = tl.load(v_rows + d[None, :], mask=s_in[:, None] & d_in[None, :], other=0.0).to(tl.float32)
        dp += tl.sum(v * do[None, :], axis=1)
    p = tl.load(p_ptr + (row * num_heads + head) * num_keys + s, mask=s_in, other=0.0).to(tl.float32)
    ds = p * (dp - tl.sum(p * dp, axis=0))  # softmax backward; zero on padded keys (p = 0 there)
    tl.store(ds_ptr + (row * num_heads + head) * num_keys + s, ds, mask=s_in)
    for d0 in range(0, head_dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_in = d < head_dim
        if PREFETCH:
            k = k_all
        else:
            k = tl.load(k_rows + d[None, :], mask=s_in[:, None] & d_in[None, :], other=0.0).to(tl.float32)
        dq = tl.sum(k * ds[:, None], axis=0) * scale
        tl.store(dq_ptr + row * hidden + head * head_dim + d, dq, mask=d_in)
        tl.store(dx_ptr + row * hidden + head * head_dim + d, tl.load(dx_row + d, mask=d_in), mask=d_in)


def forward(
    x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, training: bool, how: Launch | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``[x | contexts]`` (B, 2H): the queries ``x`` (B, H) beside the contexts of their projections ``q`` (B, H)
    over ``k``, ``v`` (B, h, S, d) with additive ``bias`` (B, S).

    Also returns, when ``training``, P (B, h, S, float32) and the scaled projected query (B, H); else two empty
    tensors. ``how``: the launch (default ``launch(S, d)``).
    """
    B, h, S, d = k.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = q.new_empty(B, 2 * h * d)
    # P in float32 whatever the dtype: the backward's dS is computed from it. Rounding P to bfloat16 put 4-6x
    # the reference's error into w_q's gradient under autocast, about 1x in float32 (autocast_comparison in
    # tests/plugins/test_triton_step.py, TRITON_INTERPRET=1 on CPU, seeds 0-3, 2026-12-02).
    p = q.new_empty(B, h, S, dtype=torch.float32) if training else out  # not written unless training
    qs = q.new_empty(B, h * d) if training else out
    how = _checked(how) if how is not None else launch(S, d)
    _forward[(B * h,)](
        x, q, k, v, bias, out, p, qs, h, S, d**-0.5,
        x.stride(0), q.stride(0), *k.stride()[:3], *v.stride()[:3], *bias.stride(),
        head_dim=d, BLOCK_S=_block_s(S), BLOCK_D=how.block_d, TRAINING=training,
        PREFETCH=_prefetch(how, d), num_warps=how.num_warps,
    )  # fmt: skip
    return out, p, qs


def backward(dj: Tensor, p: Tensor, k: Tensor, v: Tensor, how: Launch | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """From the joined output's gradient ``dj`` (B, 2H): the queries' own share of their gradient (B, H, its
    left half, copied), the projected query's gradient (B, H) and the score gradient dS (B, h, S, float32).
    ``how``: the launch (default ``launch(S, d)``)."""
    B, h, S, d = k.shape
    dj = dj if dj.stride(-1) == 1 else dj.contiguous()
    dx = dj.new_empty(B, h * d)
    dq = dj.new_empty(B, h * d)
    ds = torch.empty_like(p)
    how = _checked(how) if how is not None else launch(S, d)
    _backward[(B * h,)](
        dj, p, k, v, dx, dq, ds, h, S, d**-0.5,
        dj.stride(0), *k.stride()[:3], *v.stride()[:3],
        head_dim=d, BLOCK_S=_block_s(S), BLOCK_D=how.block_d, PREFETCH=_prefetch(how, d),
        num_warps=how.num_warps,
    )  # fmt: skip
    return dx, dq, ds
