"""The sequential train step (teacher forcing 0.9) on CPU, A/B: the 'stretches' engine (CPU's default) against
the 'steps' engine with its replayed training decode (core/_replay.py, CUDA's default). Same weights, one
process, interleaved rounds; median ms of each round's steps, then the median over rounds.

    python benchmarks/cpu_engine_ab.py --threads 2 [--batch-size 32] [--backends none,cached-decoder] [--out ab.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="none,cached-decoder")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain.registry._measure import measure
    from quatrain.registry._probe import make_batch

    torch.set_num_threads(args.threads)
    config = quatrain.ModelConfig.preset(args.preset)
    x, mask = make_batch(config, args.batch_size, torch.device("cpu"), torch.float32)
    results: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch_size}
    for backend in args.backends.split(","):
        torch.manual_seed(0)
        cfg = config.evolve(attention="none") if backend == "none" else config
        stretches = quatrain.Autoencoder(cfg, None if backend == "none" else backend, engine="stretches")
        steps = copy.deepcopy(stretches)
        steps.decoder.engine = "steps"
        rounds: dict[str, list[float]] = {"stretches": [], "steps (replay)": []}
        for _ in range(args.rounds):
            for name, model in (("stretches", stretches), ("steps (replay)", steps)):
                rounds[name].append(
                    measure(model, "train-seq", x, mask, iters=args.iters, warmup=1, cuda_graph=False).median_ms
                )
        medians = {n: statistics.median(t) for n, t in rounds.items()}
        results[backend] = {"median_ms": medians, "rounds_ms": rounds}
        print(f"{backend}: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in medians.items()), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
