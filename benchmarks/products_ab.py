"""triton-step's two products of the folded integration layer, A/B: cuBLAS against the Triton kernel
``_triton_kernels._product`` (issue 13; CUDA only).

Each decoder step of ``triton-step`` runs the stacked product ``query @ [w_q; W_query]^T + [0; b]`` (rows x 512
-> 1024 at the seed preset) and adds the context half, ``share += contexts @ W_context^T`` (512 -> 512, strided
views). At 32 rows cuBLAS's float32 kernels for these shapes leave most of the GPU idle; the Triton kernel
tiles them finer. Two parts, one process:

1. ``micro``: each product alone, replayed from a CUDA graph of ``REPS`` back-to-back calls (what a decode
   does), cuBLAS's forms and every Triton block configuration of a sweep, per rows; median µs per call.
   The fastest configuration per rows (the two products summed) is then set in ``PRODUCT_BLOCKS``.
2. ``steps``: the seed model's graphed step (``registry._measure.measure``), inference and train tf 0.9, for
   the no-attention baseline and ``triton-step`` with ``PRODUCT_ROWS`` 0 (cuBLAS) and unbounded (the kernel),
   interleaved rounds, same weights; median ms.

    python benchmarks/products_ab.py [--rows 32,64,128,256] [--batch-sizes 32,256] [--precision fp32] [--out ab.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections.abc import Callable
from typing import Any

REPS = 20
SWEEP = [(bm, bn, bk, 4) for bm, bn, bk in itertools.product((16, 32, 64), (16, 32, 64), (32, 64))]


def graph_us(fn: Callable[[], Any], replays: int = 30) -> float:
    """Median µs per call of ``fn``, replayed from a CUDA graph of REPS back-to-back calls."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(), fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPS):
            fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / REPS)
    return statistics.median(times)


def micro(rows_list: list[int], dtype: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from quatrain.plugins import _triton_kernels as kernels

    H = 512
    found: dict[str, Any] = {}
    for rows in rows_list:
        x = torch.randn(rows, H, device="cuda", dtype=dtype)
        stacked, stacked_bias = torch.randn(2 * H, H, device="cuda", dtype=dtype), torch.randn(2 * H, device="cuda", dtype=dtype)
        folded = torch.randn(H, 2 * H, device="cuda", dtype=dtype)  # the folded layer: its context half is a view
        joined = torch.randn(rows, 2 * H, device="cuda", dtype=dtype)
        share = torch.randn(rows, 2 * H, device="cuda", dtype=dtype)[:, H:]
        ctx, w_ctx = joined[:, H:], folded[:, H:]
        cublas = {
            "stacked": graph_us(lambda: F.linear(x, stacked, stacked_bias)),
            "context": graph_us(lambda: share.addmm_(ctx, w_ctx.t())),
        }
        sweep = {}
        for blocks in SWEEP:
            try:
                us = (
                    graph_us(lambda b=blocks: kernels.linear(x, stacked, stacked_bias, b)),
                    graph_us(lambda b=blocks: kernels.accumulate(share, ctx, w_ctx, b)),
                )
            except Exception as e:  # a configuration Triton cannot build here (shared memory, registers)
                print(f"   rows {rows} blocks {blocks}: {type(e).__name__}", flush=True)
                continue
            sweep[blocks] = us
        best = min(sweep, key=lambda b: sum(sweep[b]))
        found[str(rows)] = {
            "cublas_us": cublas,
            "best_blocks": best,
            "best_us": dict(zip(("stacked", "context"), sweep[best], strict=True)),
            "sweep_us": {str(b): us for b, us in sweep.items()},
        }
        kernels.PRODUCT_BLOCKS[rows] = best
        print(
            f"rows {rows}: cuBLAS stacked {cublas['stacked']:.2f} µs, context {cublas['context']:.2f} µs; Triton best"
            f" {best}: {sweep[best][0]:.2f}, {sweep[best][1]:.2f} µs",
            flush=True,
        )
    return found


def steps(batches: list[int], precision: str, iters: int, rounds_n: int) -> dict[str, Any]:
    import torch

    import quatrain
    from quatrain.plugins import _triton_kernels as kernels
    from quatrain.registry import get_registry
    from quatrain.registry._measure import measure
    from quatrain.registry._probe import build_variants, make_batch

    config = quatrain.ModelConfig.preset("seed")
    device = torch.device("cuda")
    found: dict[str, Any] = {}
    forms = {"none": ("none", None), "triton-step cuBLAS": ("triton-step", 0), "triton-step kernel": ("triton-step", 1 << 30)}
    for batch in batches:
        models = build_variants(config, ["none", "triton-step"], device=device, dtype=torch.float32, registry=get_registry())
        x, mask = make_batch(config, batch, device, torch.float32)
        for mode in ("infer", "train-seq"):
            rounds: dict[str, list[float]] = {f: [] for f in forms}
            for _ in range(rounds_n):
                for form, (name, product_rows) in forms.items():
                    if product_rows is not None:
                        kernels.PRODUCT_ROWS = product_rows
                    timing = measure(models[name], mode, x, mask, iters=iters, warmup=4, cuda_graph=True, precision=precision)
                    rounds[form].append(timing.median_ms)
            medians = {f: statistics.median(t) for f, t in rounds.items()}
            found[f"b{batch} {mode}"] = {"median_ms": medians, "rounds_ms": rounds}
            base = medians["none"]
            print(
                f"batch {batch} {mode} {precision}: "
                + "; ".join(f"{f} {ms:.3f} ms ({ms / base:.3f}x none)" for f, ms in medians.items()),
                flush=True,
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="32,64,256", help="rows of the micro part ('' skips it)")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "precision": args.precision}
    dtype = torch.float32 if args.precision == "fp32" else torch.bfloat16
    if args.rows:
        results["micro"] = micro([int(r) for r in args.rows.split(",")], dtype)
    results["steps"] = steps([int(b) for b in args.batch_sizes.split(",")], args.precision, args.iters, args.rounds)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
