"""One decoder step's attention work on CPU at the seed preset's batch-32 shapes, each op timed alone: the query
projection, the integration layer's first product with and without attention's context half, the two
single-query products and the softmax (microseconds, mean of 200 calls after 20 warm-up, 2 threads).

    python benchmarks/cpu_attention_micro.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def _us(fn: Callable[[], object], calls: int = 200) -> float:
    for _ in range(20):
        fn()
    tick = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - tick) / calls * 1e6


def main() -> None:
    torch.set_num_threads(2)
    B, heads, S, H = 32, 4, 50, 512
    d = H // heads
    q, k_t, v = torch.randn(B, heads, 1, d), torch.randn(B, heads, d, S), torch.randn(B, heads, S, d)
    p = torch.softmax(q @ k_t, dim=-1)
    query, both = torch.randn(B, H), torch.randn(B, 2 * H)
    w, w2 = torch.randn(H, H), torch.randn(H, 2 * H)
    rows = {
        "query projection (B x H) @ (H x H)": lambda: query @ w.T,
        "integration, no attention (B x H) @ (H x H)": lambda: query @ w.T,
        "integration with context (B x 2H) @ (2H x H)": lambda: both @ w2.T,
        "scores q @ K^T (B*heads single-query)": lambda: q @ k_t,
        "scores and their softmax": lambda: torch.softmax(q @ k_t, dim=-1),
        "context p @ V": lambda: p @ v,
    }
    for name, fn in rows.items():
        print(f"{_us(fn):8.1f} us  {name}")


if __name__ == "__main__":
    main()
