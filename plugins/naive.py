"""``naive``: the reference backend, with the original's cost profile.

Separate Wq, Wk, Wv, Wo; K and V re-projected from the whole memory at every decoder step; a
hand-written masked softmax. Every other backend is tested against this one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from quatrain import AttentionBackend, Capabilities, hookimpl, key_padding_guard


class NaiveAttention(AttentionBackend):
    name = "naive"
    capabilities = Capabilities(
        layout="split-qkvo",
        devices=("cpu", "cuda", "mps"),
        notes=("the reference: K and V are re-projected from the memory at every step, as in the original",),
    )

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        # Parameter names are the 'split-qkvo' layout; converters depend on them.
        self.w_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_o = nn.Linear(hidden_size, hidden_size, bias=False)

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:
        return memory, key_mask  # nothing projected ahead: that is the point of this backend

    def _attend(self, queries: Tensor, memory: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        B, T, H = queries.shape
        h, d = self.num_heads, H // self.num_heads
        q = self.w_q(queries).view(B, T, h, d).transpose(1, 2)  # (B, h, T, d)
        k = self.w_k(memory).view(B, -1, h, d).transpose(1, 2)  # (B, h, S, d)
        v = self.w_v(memory).view(B, -1, h, d).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, h, T, S)
        safe_mask, has_key = key_padding_guard(key_mask)
        scores = scores.masked_fill(~safe_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1) * has_key[:, None, None, :].to(scores.dtype)
        context = (weights @ v).transpose(1, 2).reshape(B, T, H)
        return self.w_o(context), weights

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, key_mask = state
        context, weights = self._attend(query.unsqueeze(1), memory, key_mask)
        return context.squeeze(1), (weights.squeeze(2) if need_weights else None)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, key_mask = state
        context, weights = self._attend(queries, memory, key_mask)
        return context, (weights if need_weights else None)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(NaiveAttention)
