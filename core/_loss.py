"""The training loss: masked 0.9 * (1 - cosine) + 0.1 * MSE to unit-normalised targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor, mse_weight: float = 0.1) -> Tensor:
    """Token-weighted mean over real tokens of ``(1 - w)(1 - cos) + w * mean_D (pred - target/|target|)^2``.

    Args:
        pred, target: (B, T, E).
        mask: (B, T) bool, True at real tokens.
        mse_weight: ``w``; the original used 0.1.
    """
    weight = mask.to(pred.dtype)
    cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-8)  # (B, T)
    mse = (pred - F.normalize(target, dim=-1, eps=1e-8)).pow(2).mean(dim=-1)  # (B, T)
    per_token = (1.0 - mse_weight) * (1.0 - cos) + mse_weight * mse
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)


def token_cosine(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean cosine over real tokens (pads excluded), weighted by token."""
    weight = mask.to(torch.float32)
    cos = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
    return (cos * weight).sum() / weight.sum().clamp(min=1.0)
