"""``fused-qkv``: one fused Q/K/V weight; K and V from one matmul per step; the hand-written softmax.

Still re-projects K and V from the whole memory at every decoder step (like ``naive``), but with one
matmul instead of two. Layout ``fused-qkv-o``: ``w_qkv`` (3H, H) holds the rows of Wq, Wk, Wv.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quatrain import AttentionBackend, Capabilities, hookimpl

from ._attention import Mask, keys, merge_heads, prepare_mask, softmax_attention, split_heads


class FusedQKVAttention(AttentionBackend):
    name = "fused-qkv"
    capabilities = Capabilities(
        layout="fused-qkv-o",
        devices=("cpu", "cuda"),
        notes=(
            "per step: Q from w_qkv's first H rows, K and V in one matmul from its last 2H rows; "
            "K and V are still re-projected from the memory at every step",
            "hand-written masked softmax, so attention weights come for free",
        ),
    )

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        # Parameter names are the 'fused-qkv-o' layout; converters depend on them.
        self.w_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.w_o = nn.Linear(hidden_size, hidden_size, bias=False)

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:
        return memory, prepare_mask(key_mask, memory.dtype)

    def _attend(self, queries: Tensor, memory: Tensor, mask: Mask) -> tuple[Tensor, Tensor]:
        H = self.hidden_size
        w_q, w_kv = self.w_qkv.weight.split([H, 2 * H])
        q = split_heads(F.linear(queries, w_q), self.num_heads)  # (B, h, T, d)
        k, v = F.linear(memory, w_kv).chunk(2, dim=-1)  # one matmul: (B, S, 2H) -> 2 x (B, S, H)
        context, weights = softmax_attention(q, keys(k, v, mask, self.num_heads))
        return self.w_o(merge_heads(context)), weights  # (B, T, H), (B, h, T, S)

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = state
        context, weights = self._attend(query.unsqueeze(1), memory, mask)
        return context.squeeze(1), (weights.squeeze(2) if need_weights else None)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = state
        context, weights = self._attend(queries, memory, mask)
        return context, (weights if need_weights else None)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(FusedQKVAttention)
