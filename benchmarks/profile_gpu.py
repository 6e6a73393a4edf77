"""Where a train step's time goes: one eager step under torch.profiler (kernel count, GPU-busy time, top
kernels) beside the graphed step's time, for the baseline and the backends named.

    python benchmarks/profile_gpu.py --preset seed --device cuda [--batch-size 32] [--variants none,naive,...]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import quatrain
from quatrain.registry import get_registry
from quatrain.registry._measure import measure
from quatrain.registry._probe import build_variants, make_batch


def kernel_summary(prof: profile) -> tuple[int, float, list[tuple[str, int, float]]]:
    """(kernel launches, total kernel ms, every kernel name with its launches and ms, by time) of one region."""
    kernels = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
    ]  # kernels and copies; not the optimizer's range annotation, whose time is a wall-clock span
    total_ms = sum(e.device_time for e in kernels) / 1000.0
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.device_time / 1000.0)
    ranked = sorted(((n, len(t), sum(t)) for n, t in by_name.items()), key=lambda r: -r[2])
    return len(kernels), total_ms, ranked


def print_launch_diff(kernels: dict[str, dict[str, tuple[int, float]]], names: list[str]) -> None:
    """Per kernel name whose launches (or time, by over 5 % and 0.02 ms) differ from the first variant's: each
    variant's launches and kernel ms (one eager step), the largest time difference first; then their total."""
    base = names[0]
    every = sorted({k for found in kernels.values() for k in found})
    rows = [(k, [kernels[n].get(k, (0, 0.0)) for n in names]) for k in every]

    def differs(x: tuple[int, float], b: tuple[int, float]) -> bool:
        return x[0] != b[0] or abs(x[1] - b[1]) > max(0.02, 0.05 * b[1])

    rows = [(k, c) for k, c in rows if any(differs(x, c[0]) for x in c)]
    if not rows:
        return
    print(f"\n   kernels whose launches or time differ from {base}'s (launches, ms): " + " / ".join(names))
    for k, c in sorted(rows, key=lambda r: -(max(x[1] for x in r[1]) - r[1][0][1])):
        print(f"   {' / '.join(f'{n:5d} {ms:6.3f}' for n, ms in c)}  {k[:80]}")
    totals = [sum(c[i][1] - c[0][1] for _, c in rows) for i in range(len(names))]
    print("   ms more than " + base + " in those kernels: " + " / ".join(f"{t:.3f}" for t in totals))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--variants", default="none,naive,cached-decoder")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = quatrain.ModelConfig.preset(args.preset)
    names = args.variants.split(",")
    models = build_variants(config, names, device=device, dtype=dtype, registry=get_registry())
    x, mask = make_batch(config, args.batch_size, device, dtype)
    cuda = device.type == "cuda"
    for mode in ("train-seq", "train-par", "infer"):
        kernels: dict[str, dict[str, tuple[int, float]]] = {}
        for name in names:
            model = models[name]
            eager = measure(model, mode, x, mask, iters=10, warmup=2, cuda_graph=False)
            graphed = measure(model, mode, x, mask, iters=20, warmup=4, cuda_graph=True) if cuda else None
            if mode == "infer":
                step = quatrain.InferenceStep(model)
            else:
                step = quatrain.TrainStep(model, teacher_forcing=0.9 if mode == "train-seq" else 1.0)
            step(x, mask)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                step(x, mask)
                if cuda:
                    torch.cuda.synchronize()
            model.train()
            print(f"\n## {mode} {name}: eager {eager.median_ms:.2f} ms", end="")
            if graphed is not None:
                print(f", one CUDA graph {graphed.median_ms:.2f} ms (graphed={graphed.graphed} {graphed.note})")
            else:
                print()
            if cuda:
                launches, busy, ranked = kernel_summary(prof)
                kernels[name] = {kname: (count, ms) for kname, count, ms in ranked}
                print(f"   {launches} kernel launches, {busy:.2f} ms of kernel time in one eager step")
                for kname, count, ms in ranked[:12]:
                    print(f"   {ms:8.3f} ms  {count:5d}x  {kname[:70]}")
            else:
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
        if kernels:
            print_launch_diff(kernels, names)


if __name__ == "__main__":
    main()
