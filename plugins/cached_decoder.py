"""``cached-decoder``: K and V projected once per sequence in ``prepare``, SDPA per step, a parallel path.

The original computed a K/V cache under ``no_grad`` and never used it (reference/seed-system.md); here
the projection runs once per sequence *with* autograd, every step attends to it, and gradients flow
back through it to the memory and to ``w_kv`` (checked by the conformance kit, tests/plugins/).
Layout ``q-kv-o``: ``w_q`` (H, H), ``w_kv`` (2H, H) = rows of Wk then Wv, ``w_o`` (H, H).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from quatrain import AttentionBackend, Capabilities, hookimpl

from ._attention import SDPA_KERNEL_NOTES, Keys, attend, keys, merge_heads, prepare_mask, probe_kernel, split_heads


class CachedDecoderAttention(AttentionBackend):
    name = "cached-decoder"
    capabilities = Capabilities(
        layout="q-kv-o",
        devices=("cpu", "cuda"),
        # CUDA's SDPA backward may accumulate with atomics (PyTorch's SDPA docs): not bit-reproducible there.
        deterministic=False,
        notes=(
            "K and V are projected once per sequence (one matmul, with autograd) and reused by every step",
            "w_o is folded into the decoder's integration layer once per decode (AttentionBackend.output_weight)",
            *SDPA_KERNEL_NOTES,
        ),
    )

    kernel: str | None
    """The SDPA kernel PyTorch picks for the last prepared batch (None before the first)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        # Parameter names are the 'q-kv-o' layout; converters depend on them.
        self.w_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_kv = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.w_o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.kernel = None

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Keys:
        k, v = self.w_kv(memory).chunk(2, dim=-1)  # (B, S, H) each, once per sequence
        # The mask in K's dtype, not the memory's: under bf16 autocast the projection is bfloat16 and the
        # memory float32, and a float32 mask would promote V and the scores back to float32.
        state = keys(k, v, prepare_mask(key_mask, k.dtype), self.num_heads, zero_empty=True)
        probe_kernel(self, state)
        return state

    output_weight = "w_o"  # the decoder folds it into its integration layer (AttentionBackend)

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q = split_heads(self.w_q(query).unsqueeze(1), self.num_heads)  # (B, h, 1, d)
        context, weights = attend(q, state, need_weights)
        return self.w_o(merge_heads(context)).squeeze(1), (weights.squeeze(2) if weights is not None else None)

    def step_context(self, query: Tensor, state: Any) -> Tensor:
        q = split_heads(self.w_q(query).unsqueeze(1), self.num_heads)
        return merge_heads(attend(q, state, False)[0]).squeeze(1)

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q = split_heads(self.w_q(queries), self.num_heads)  # (B, h, T, d)
        context, weights = attend(q, state, need_weights)
        return self.w_o(merge_heads(context)), weights

    def parallel_context(self, queries: Tensor, state: Any) -> Tensor:
        return merge_heads(attend(split_heads(self.w_q(queries), self.num_heads), state, False)[0])


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(CachedDecoderAttention)
