"""triton-step's no-gradient steps, A/B: attention and the context half's product as one kernel
(``Integration.values``, ``_triton_kernels.forward_folded``) against the Triton attention kernel followed by
cuBLAS's product (issue 13; CUDA only).

The seed model's graphed step (``registry._measure.measure``, the bench's engine), inference and train tf 0.9
(whose steps run without gradients before the replay), the no-attention baseline and ``triton-step`` with
``triton_step.FOLD_BYTES`` 0 (never fold), as shipped, and unbounded; same weights, interleaved rounds; median
ms of each round's steps, then the median over rounds.

    python benchmarks/fold_values_ab.py [--batch-sizes 32,256] [--out ab.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain.plugins import triton_step
    from quatrain.registry import get_registry
    from quatrain.registry._measure import measure
    from quatrain.registry._probe import build_variants, make_batch

    device = torch.device("cuda")
    config = quatrain.ModelConfig.preset("seed")
    shipped = triton_step.FOLD_BYTES
    forms: dict[str, tuple[str, int]] = {
        "none": ("none", shipped),
        "two kernels": ("triton-step", 0),
        "shipped": ("triton-step", shipped),
        "always fold": ("triton-step", 1 << 40),
    }
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "fold_bytes": shipped}
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        models = build_variants(config, ["none", "triton-step"], device=device, dtype=torch.float32, registry=get_registry())
        x, mask = make_batch(config, batch, device, torch.float32)
        for mode in ("infer", "train-seq"):
            rounds: dict[str, list[float]] = {f: [] for f in forms}
            for _ in range(args.rounds):
                for form, (name, fold_bytes) in forms.items():
                    triton_step.FOLD_BYTES = fold_bytes
                    timing = measure(models[name], mode, x, mask, iters=args.iters, warmup=4, cuda_graph=True)
                    rounds[form].append(timing.median_ms)
            triton_step.FOLD_BYTES = shipped
            medians = {f: statistics.median(t) for f, t in rounds.items()}
            results[f"b{batch} {mode}"] = {"median_ms": medians, "rounds_ms": rounds}
            base = medians["none"]
            print(
                f"batch {batch} {mode} fp32: " + "; ".join(f"{f} {ms:.3f} ms ({ms / base:.3f}x)" for f, ms in medians.items()),
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
