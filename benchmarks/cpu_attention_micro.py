"""One decoder step's attention work on CPU at the seed preset's batch-32 shapes, each op timed alone: the query
projection, the integration layer's first product with and without attention's context half, the two
single-query products and the softmax (microseconds, mean of 200 calls after 20 warm-up, 2 threads).

A second column times each op cold, as a decode meets it: after reading a buffer the size of the decoder's
weights (``--evict`` MB, default 64), which leaves the op's operands out of the caches, as each step's RNN
and linear layers do to K and V (median of 50 such calls, the eviction untimed). The single-query products
read all of K or V (B x S x H float32, 3.3 MB each) once per call: cold, they run at memory speed.

    python benchmarks/cpu_attention_micro.py [--threads 2] [--evict 64]
"""

from __future__ import annotations

import argparse
import statistics
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


def _cold_us(fn: Callable[[], object], evict: torch.Tensor, calls: int = 50) -> float:
    times = []
    for _ in range(calls):
        evict.add_(1.0)  # read and write every byte: the caches now hold the buffer, not the operands
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evict", type=int, default=64, help="MB read between cold calls")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    evict = torch.zeros(args.evict * 2**20 // 4)
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
    print(f"{torch.__version__}, {args.threads} threads; warm: mean of 200 back to back; cold: median of 50, each")
    print(f"after reading {args.evict} MB")
    print(f"{'warm us':>8} {'cold us':>8}  op")
    for name, fn in rows.items():
        print(f"{_us(fn):8.1f} {_cold_us(fn, evict):8.1f}  {name}")
    k_mb = k_t.numel() * 4 / 2**20
    cold = _cold_us(lambda: q @ k_t, evict)
    print(f"q @ K^T cold reads {k_mb:.1f} MB in {cold:.0f} us: {k_mb / 1024 / (cold * 1e-6):.1f} GB/s")


if __name__ == "__main__":
    main()
