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


def kernel_summary(prof: profile, top: int = 12) -> tuple[int, float, list[tuple[str, int, float]]]:
    """(kernel launches, total kernel ms, top kernels by time) of one profiled region."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_ms = sum(e.device_time for e in kernels) / 1000.0
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.device_time / 1000.0)
    ranked = sorted(((n[:70], len(t), sum(t)) for n, t in by_name.items()), key=lambda r: -r[2])
    return len(kernels), total_ms, ranked[:top]


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
                launches, busy, top = kernel_summary(prof)
                print(f"   {launches} kernel launches, {busy:.2f} ms of kernel time in one eager step")
                for kname, count, ms in top:
                    print(f"   {ms:8.3f} ms  {count:5d}x  {kname}")
            else:
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
