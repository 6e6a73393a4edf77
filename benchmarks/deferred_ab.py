"""Deferred decoder weight gradients, A/B: the same models' train steps (teacher forcing 0.9) with the
decoder's per-step linear layers deferred (``core/_deferred.py``) and not (``F.linear`` at every step), for
each decode engine, in one process, in interleaved rounds. Median ms per step.

    python benchmarks/deferred_ab.py --device cpu --threads 2 --iters 7 [--backends none,deferred-kv] [--out ab.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--backends", default="none,deferred-kv")
    parser.add_argument("--engines", default="stretches,steps")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    import quatrain
    from quatrain import _model
    from quatrain._trainstep import TrainStep, synchronize

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    graphs = device.type == "cuda"
    config = quatrain.ModelConfig.preset("seed")
    B, T = args.batch_size, config.max_len
    torch.manual_seed(0)
    x = torch.randn(B, T, config.embed_dim, device=device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    deferred_linears = _model.DeferredLinears

    def use(deferred: bool) -> None:
        _model.DeferredLinears = deferred_linears if deferred else (lambda: F.linear)  # type: ignore[assignment]

    steps: dict[str, tuple[bool, Any]] = {}
    for backend in args.backends.split(","):
        cfg = config if backend != "none" else config.evolve(attention="none")
        for engine in args.engines.split(","):
            for deferred in (True, False):
                torch.manual_seed(0)
                model = quatrain.Autoencoder(cfg, None if backend == "none" else backend, engine=engine).to(device)
                name = f"{backend} {engine} {'deferred' if deferred else 'per step'}"
                steps[name] = (deferred, TrainStep(model, teacher_forcing=0.9, cuda_graph=graphs, warmup=2))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.iters + 2):  # two warm-up rounds, then timed ones, every variant once a round
        for name, (deferred, train) in steps.items():
            use(deferred)
            synchronize(device)
            tick = time.perf_counter()
            train(x, mask)
            synchronize(device)
            if round_ >= 2:
                times[name].append((time.perf_counter() - tick) * 1000.0)
    use(True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    lines = [
        f"# Deferred decoder weight gradients A/B: seed preset, fp32, batch {B} x {T}, teacher forcing 0.9, "
        f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.iters} "
        "interleaved rounds",
        "",
        "| backend, engine | deferred ms | per step ms | deferred / per step |",
        "|---|---|---|---|",
    ]
    for backend in args.backends.split(","):
        for engine in args.engines.split(","):
            on, off = medians[f"{backend} {engine} deferred"], medians[f"{backend} {engine} per step"]
            lines.append(f"| {backend}, {engine} | {on:.1f} | {off:.1f} | {on / off:.3f} |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(device), "torch": torch.__version__, "batch": B, "times_ms": times}, f, indent=1)
        with open(args.out.removesuffix(".json") + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
