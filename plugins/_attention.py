"""Attention math the built-in backends share: head reshaping, the masked softmax, SDPA with a padding guard.

Every function here computes the reference function of ``quatrain.AttentionBackend`` (a query row whose
keys are all masked gives zeros, never NaN); the backends built on them are checked against ``naive`` by
the conformance kit (tests/plugins/test_conformance.py).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from quatrain import key_padding_guard

log = logging.getLogger("quatrain.plugins")

SDPA_KERNEL_NOTES = (
    "SDPA kernels (PyTorch picks one per call): CPU runs the fused flash kernel "
    "(_scaled_dot_product_flash_attention_for_cpu) for float32, bfloat16 and float16, with or without a mask "
    "(seen with torch 2.13); CUDA flash needs float16/bfloat16 (sm80+) and takes no mask, so with the key "
    "padding mask CUDA runs memory-efficient (float32/16/bf16), cuDNN (float16/bfloat16) or math.",
    "need_weights=True computes the scores explicitly (SDPA cannot return weights), the same math as naive.",
    "the kernel PyTorch chose for the last prepared batch is in the module's 'kernel' attribute.",
)

# SDPBackend values as torch._fused_sdp_choice returns them (torch/nn/attention/__init__.py).
_KERNEL_NAMES = {-1: "error", 0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H) -> (B, heads, L, d)."""
    B, L, H = x.shape
    return x.view(B, L, num_heads, H // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, d) -> (B, L, H)."""
    B, h, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, h * d)


class Mask(NamedTuple):
    """A key padding mask prepared once per sequence, as the attention calls want it."""

    attn_mask: Tensor
    """(B, 1, 1, S) bool, True = attend, with fully masked rows opened up (so softmax stays finite)."""
    has_key: Tensor
    """(B, 1, 1, 1) in the compute dtype: 0.0 for rows without any key, whose context is zeroed."""


class Keys(NamedTuple):
    """K and V split into heads, with their mask."""

    k: Tensor
    """(B, heads, S, d)."""
    v: Tensor
    """(B, heads, S, d)."""
    mask: Mask
    values_zeroed: bool = False
    """V is zero on rows without keys (``keys(..., zero_empty=True)``), so SDPA contexts need no zeroing per call."""


def prepare_mask(key_mask: Tensor, dtype: torch.dtype) -> Mask:
    """Turn a (B, S) bool key mask into a ``Mask``, once per sequence (see ``quatrain.key_padding_guard``).

    No data-dependent branch and no host sync, so a whole train step stays capturable in a CUDA graph.
    """
    safe_mask, has_key = key_padding_guard(key_mask)
    return Mask(safe_mask[:, None, None, :], has_key.to(dtype)[:, :, None, None])


def keys(k: Tensor, v: Tensor, mask: Mask, num_heads: int, zero_empty: bool = False) -> Keys:
    """Split projected K, V (B, S, H) into heads.

    ``zero_empty``: multiply V by ``has_key`` here, once (exact: by 1.0 or 0.0), so that a row without keys
    attends to zeros and every later SDPA call skips its own zeroing; for K/V prepared once per sequence.
    """
    v_heads = split_heads(v, num_heads)
    if zero_empty:
        v_heads = v_heads * mask.has_key
    return Keys(split_heads(k, num_heads), v_heads, mask, zero_empty)


def softmax_attention(q: Tensor, keys: Keys) -> tuple[Tensor, Tensor]:
    """Hand-written masked softmax attention: contexts (B, heads, T, d) and weights (B, heads, T, S)."""
    scores = q @ keys.k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, S)
    scores = scores.masked_fill(~keys.mask.attn_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1) * keys.mask.has_key
    return weights @ keys.v, weights


def sdpa_attention(q: Tensor, keys: Keys) -> Tensor:
    """``F.scaled_dot_product_attention`` with the bool key mask: contexts (B, heads, T, d)."""
    context = F.scaled_dot_product_attention(q, keys.k, keys.v, attn_mask=keys.mask.attn_mask)
    return context if keys.values_zeroed else context * keys.mask.has_key


def attend(q: Tensor, keys: Keys, need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """SDPA when weights are not wanted, else the explicit softmax (SDPA cannot return weights)."""
    if need_weights:
        return softmax_attention(q, keys)
    return sdpa_attention(q, keys), None


def sdpa_kernel(q: Tensor, keys: Keys) -> str:
    """The SDPA kernel PyTorch would pick for these inputs: 'flash', 'efficient', 'cudnn', 'math', ...

    Asks the dispatcher's own chooser (``torch._fused_sdp_choice``, a private function; 'unknown' if a
    torch version lacks it). Cheap: it inspects shapes, dtypes and devices, it does not compute.
    """
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return "unknown"
    try:
        return _KERNEL_NAMES.get(int(choose(q, keys.k, keys.v, keys.mask.attn_mask, 0.0, False)), "unknown")
    except (RuntimeError, TypeError):
        return "unknown"


def probe_kernel(owner: object, keys: Keys, num_queries: int = 1) -> None:
    """Record on ``owner.kernel`` the kernel SDPA picks for a batch like ``keys``; log when it changes."""
    if torch.compiler.is_compiling():
        return
    B, h, _, d = keys.k.shape
    q = torch.empty(B, h, num_queries, d, dtype=keys.k.dtype, device=keys.k.device)
    q.requires_grad_(torch.is_grad_enabled() and keys.k.requires_grad)
    kernel = sdpa_kernel(q, keys)
    if getattr(owner, "kernel", None) != kernel:
        log.debug("%s: SDPA uses the %s kernel (%s, %s)", type(owner).__name__, kernel, q.device, q.dtype)
    owner.kernel = kernel  # type: ignore[attr-defined]  # a plain attribute set on the backend module
