"""The output fold, A/B: the same model's steps with the fold on and off (``output_weight`` cleared on the
backend's class), through the engine (TrainStep at teacher forcing 0.9 and InferenceStep, CUDA graphs on a
GPU), beside the no-attention baseline, in one process. Median ms of interleaved rounds.

    python benchmarks/fold_ab.py --device cuda --batch-size 32 --iters 30 [--out fold.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--backends", default="cached-decoder,deferred-kv")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain._trainstep import InferenceStep, TrainStep, synchronize

    device = torch.device(args.device)
    graphs = device.type == "cuda"
    config = quatrain.ModelConfig.preset("seed")
    B, T = args.batch_size, config.max_len
    torch.manual_seed(0)
    x = torch.randn(B, T, config.embed_dim, device=device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)

    def timed(run: Any) -> float:
        for _ in range(3):
            run()
        synchronize(device)
        times = []
        for _ in range(args.iters):
            tick = time.perf_counter()
            run()
            synchronize(device)
            times.append((time.perf_counter() - tick) * 1000.0)
        return statistics.median(times)

    def measure(backend: str | None, fold: bool) -> dict[str, float]:
        cfg = config if backend else quatrain.ModelConfig.from_dict({**config.to_dict(), "attention": "none"})
        torch.manual_seed(0)
        model = quatrain.Autoencoder(cfg, backend).to(device)
        cls = type(model.decoder.attention) if backend else None
        saved = cls.output_weight if cls else None
        if cls is not None and not fold:
            cls.output_weight = None
        try:
            train = TrainStep(model, teacher_forcing=0.9, cuda_graph=graphs, warmup=2)
            seq = timed(lambda: train(x, mask))
            infer = InferenceStep(model, cuda_graph=graphs, warmup=2)
            inference = timed(lambda: infer(x, mask))
        finally:
            if cls is not None:
                cls.output_weight = saved
        return {"train_tf0.9_ms": seq, "inference_ms": inference}

    rows: dict[str, Any] = {"none": measure(None, False)}
    for backend in args.backends.split(","):
        rows[f"{backend} fold"] = measure(backend, True)
        rows[f"{backend} no fold"] = measure(backend, False)
    base = rows["none"]
    lines = [
        f"# Output fold A/B: seed preset, fp32, batch {B} x {T}, {device} "
        f"({torch.cuda.get_device_name(0) if graphs else 'CPU'}), torch {torch.__version__}, median of {args.iters}",
        "",
        "| variant | train tf 0.9 ms | x none | inference ms | x none |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['train_tf0.9_ms']:.2f} | {r['train_tf0.9_ms'] / base['train_tf0.9_ms']:.3f} "
            f"| {r['inference_ms']:.2f} | {r['inference_ms'] / base['inference_ms']:.3f} |"
        )
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(device), "torch": torch.__version__, "batch": B, "rows": rows}, f, indent=1)
        with open(args.out.removesuffix(".json") + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
