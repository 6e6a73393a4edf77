"""quatrain-local-window: attention restricted to memory positions near the decoder step's aligned position.

The seed report's "local attention windows for poetry structure": an autoencoder's output token t
reconstructs input token t, so step t attends only to memory positions ``t - radius .. t + radius``
(clamped to the memory). With a radius at least the memory's length it is exactly the reference
attention; with a smaller one it is an approximation, so it declares ``exact=False`` and ``auto``
considers it only when the user allows approximations.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from quatrain import AttentionBackend, Capabilities, hookimpl, key_padding_guard

__all__ = ["LocalWindowAttention", "band_mask", "register_attention_backends"]


def band_mask(steps: Tensor, length: int, radius: int) -> Tensor:
    """(T, S) bool: True where memory position s is within ``radius`` of the step's aligned position.

    The aligned position of step t is t, clamped to the last memory position (a decode longer than
    the memory keeps looking at its end).
    """
    centre = steps.clamp(max=length - 1)[:, None]  # (T, 1)
    positions = torch.arange(length, device=steps.device)[None, :]  # (1, S)
    return (positions - centre).abs() <= radius


class LocalWindowAttention(AttentionBackend):
    """Multi-head attention over a window of ``2 * radius + 1`` memory positions around each step.

    Its parameters are the standard 'split-qkvo' layout (``w_q``, ``w_k``, ``w_v``, ``w_o``, no bias), so
    any quatrain checkpoint converts to and from it through the registered layout converters.
    """

    name = "local-window"
    radius: ClassVar[int] = 4
    """Memory positions on each side of the aligned one that a step may attend to."""
    capabilities = Capabilities(
        layout="split-qkvo",
        devices=("cpu", "cuda", "mps"),
        exact=False,
        notes=(f"attends to memory positions within ±{radius} of the step (exact only when the memory is shorter)",),
    )

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        # Parameter names are the 'split-qkvo' layout: the converters between layouts rely on them.
        self.w_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_o = nn.Linear(hidden_size, hidden_size, bias=False)

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:
        B, S, H = memory.shape
        h, d = self.num_heads, H // self.num_heads
        k = self.w_k(memory).view(B, S, h, d).transpose(1, 2)  # (B, h, S, d), projected once per sequence
        v = self.w_v(memory).view(B, S, h, d).transpose(1, 2)
        # The decoder calls step() once per position, in order, after one prepare(): count the steps here.
        return {"k": k, "v": v, "key_mask": key_mask, "step": 0}

    def _attend(self, queries: Tensor, state: Any, steps: Tensor) -> tuple[Tensor, Tensor]:
        B, T, H = queries.shape
        k, v, key_mask = state["k"], state["v"], state["key_mask"]
        h, d, S = self.num_heads, H // self.num_heads, k.shape[2]
        q = self.w_q(queries).view(B, T, h, d).transpose(1, 2)  # (B, h, T, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, h, T, S)
        allowed = key_mask[:, None, :] & band_mask(steps, S, self.radius)[None]  # (B, T, S)
        safe, has_key = key_padding_guard(allowed)  # a window with no real key gives a zero context
        scores = scores.masked_fill(~safe[:, None], float("-inf"))
        weights = torch.softmax(scores, dim=-1) * has_key[:, None].to(scores.dtype)
        context = (weights @ v).transpose(1, 2).reshape(B, T, H)
        return self.w_o(context), weights

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        t = state["step"]
        state["step"] = t + 1
        steps = torch.tensor([t], device=query.device)
        context, weights = self._attend(query.unsqueeze(1), state, steps)
        return context.squeeze(1), (weights.squeeze(2) if need_weights else None)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        steps = torch.arange(queries.shape[1], device=queries.device)
        context, weights = self._attend(queries, state, steps)
        return context, (weights if need_weights else None)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(LocalWindowAttention)
