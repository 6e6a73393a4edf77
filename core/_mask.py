"""The key padding mask's one rule: a left-aligned (B, T) bool tensor, real tokens first."""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_of(mask: Tensor) -> Tensor:
    """Valid lengths (B,) of a left-aligned bool mask (B, T); anything else is refused."""
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"mask must be a (B, T) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    lengths = mask.sum(dim=1)
    aligned = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    # The check reads a device tensor on the host; inside CUDA-graph capture that is not allowed (the
    # train step checks each batch's mask before replaying a captured graph instead).
    capturing = mask.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing and not torch.equal(aligned, mask):
        raise ValueError("mask must be left-aligned: real tokens first, then padding")
    return lengths
