"""``sdpa-flash``: fused Q/K/V weights and ``torch.nn.functional.scaled_dot_product_attention``.

Like ``fused-qkv`` it re-projects K and V (one matmul) at every step; the attention itself is SDPA with
a boolean key mask, so PyTorch picks the kernel (flash, memory-efficient, cuDNN or math). The kernel it
picks for the current batch is recorded in ``kernel`` at ``prepare`` time.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quatrain import AttentionBackend, Capabilities, hookimpl

from ._attention import SDPA_KERNEL_NOTES, Mask, attend, keys, merge_heads, prepare_mask, probe_kernel, split_heads


class SdpaFlashAttention(AttentionBackend):
    name = "sdpa-flash"
    capabilities = Capabilities(
        layout="fused-qkv-o",
        devices=("cpu", "cuda"),
        # CUDA's memory-efficient backward accumulates with atomics: not bit-reproducible there.
        deterministic=False,
        notes=(
            "K and V are re-projected (one matmul) at every step; see cached-decoder for the cached form",
            *SDPA_KERNEL_NOTES,
        ),
    )

    kernel: str | None
    """The SDPA kernel PyTorch picks for the last prepared batch (None before the first)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        # Parameter names are the 'fused-qkv-o' layout; converters depend on them.
        self.w_qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.w_o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.kernel = None

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:
        mask = prepare_mask(key_mask, memory.dtype)
        probe_kernel(self, keys(memory, memory, mask, self.num_heads))  # K, V have memory's shape and dtype
        return memory, mask

    def _attend(self, queries: Tensor, memory: Tensor, mask: Mask, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        H = self.hidden_size
        w_q, w_kv = self.w_qkv.weight.split([H, 2 * H])
        q = split_heads(F.linear(queries, w_q), self.num_heads)  # (B, h, T, d)
        k, v = F.linear(memory, w_kv).chunk(2, dim=-1)  # one matmul for K and V
        context, weights = attend(q, keys(k, v, mask, self.num_heads), need_weights)
        return self.w_o(merge_heads(context)), weights

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = state
        context, weights = self._attend(query.unsqueeze(1), memory, mask, need_weights)
        return context.squeeze(1), (weights.squeeze(2) if weights is not None else None)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = state
        return self._attend(queries, memory, mask, need_weights)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(SdpaFlashAttention)
