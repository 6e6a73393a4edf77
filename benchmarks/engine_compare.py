"""The engine bars of issue 11, from runs benchmarks/gpu_engine.sh made: `quatrain train`'s epoch seq/s against
the engine's own rate at the same shapes, and `quatrain eval` against InferenceStep's.

For each batch B it reads OUT/bB/m.log.jsonl (the trainer's epochs: ``seconds`` is the training pass alone,
validation excluded) and OUT/bB/eval.json (``quatrain eval --json``: the decode-and-metrics loop's seconds),
then runs ``quatrain.registry.run_bench`` (what ``quatrain bench`` runs) on the same model, backend, batch and
length, and a decode-only ``evaluate`` (no word search) of the test and train splits. Writes
OUT/engine.json and OUT/engine.md.

    python benchmarks/engine_compare.py OUT --preset seed --embeddings build/engine-run/glove50.npy \\
        --backend cached-decoder --batches 64 256 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _bench(config: Any, backend: str, batch: int, device: str, iters: int) -> dict[str, Any]:
    from quatrain.registry import run_bench

    report = run_bench(config, device=device, backends=[backend], batch_size=batch, iters=iters, warmup=3)
    row = next(v for v in report["variants"] if v["name"] == backend)
    found: dict[str, Any] = {"correct": row["correct"], "versions": report["versions"]}
    for mode in ("train-par", "infer", "train-epoch"):
        timing = row["modes"].get(mode)
        if timing is None or timing.get("median_ms") is None:
            continue
        found[mode] = {
            "median_ms": timing["median_ms"],
            "seq_per_s": batch * 1000.0 / timing["median_ms"],
            "graphed": timing.get("graphed"),
            "note": timing.get("note", ""),
        }
    return found


def _decode_only(checkpoint: Path, backend: str, batch: int, device: str) -> dict[str, Any]:
    import quatrain
    from quatrain import data_for_checkpoint

    data = data_for_checkpoint(checkpoint)
    model = quatrain.load(checkpoint, backend=backend, device=device)
    found = {}
    for split in ("test", "train"):
        result = quatrain.evaluate(model, data, split, batch_size=batch, words=False, device=device)
        found[split] = {k: result[k] for k in ("windows", "setup_seconds", "seconds", "seq_per_s")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--embed-dim", type=int, default=50)
    parser.add_argument("--backend", default="cached-decoder")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()

    import torch

    import quatrain

    config = quatrain.ModelConfig.preset(args.preset, embed_dim=args.embed_dim)
    rows = []
    for batch in args.batches:
        folder = args.out / f"b{batch}"
        log = [json.loads(line) for line in (folder / "m.log.jsonl").read_text().splitlines()]
        later = [r for r in log if r["epoch"] >= 2] or log
        train_rate = statistics.median(r["seq_per_s"] for r in later)
        bench = _bench(config, args.backend, batch, args.device, args.iters)
        evaluation = json.loads((folder / "eval.json").read_text())
        row: dict[str, Any] = {
            "batch": batch,
            "train_epochs": [{k: r[k] for k in ("epoch", "seq_per_s", "seconds", "engine")} for r in log],
            "train_seq_per_s": train_rate,
            "bench": bench,
            "eval": {
                k: evaluation[k] for k in ("split", "windows", "setup_seconds", "seconds", "seq_per_s", "backend")
            },
            "eval_decode_only": _decode_only(folder / "m.safetensors", args.backend, batch, args.device),
        }
        if "train-par" in bench:
            row["train_ratio"] = train_rate / bench["train-par"]["seq_per_s"]
        if "train-epoch" in bench:
            row["bench_epoch_ratio"] = bench["train-epoch"]["seq_per_s"] / bench["train-par"]["seq_per_s"]
        if "infer" in bench:
            rate = bench["infer"]["seq_per_s"]
            row["eval_ratio"] = evaluation["seq_per_s"] / rate
            row["eval_decode_only_ratio"] = {k: v["seq_per_s"] / rate for k, v in row["eval_decode_only"].items()}
            # the eval loop against replays alone of the same (padded) batches
            replays = -(-evaluation["windows"] // batch) * bench["infer"]["median_ms"] / 1000.0
            row["eval_vs_replays"] = replays / evaluation["seconds"]
            wall = evaluation["seconds"] + evaluation["setup_seconds"]
            row["eval_wall_ratio"] = evaluation["windows"] / wall / rate
        rows.append(row)
        shown = {**row, "bench": {k: v for k, v in bench.items() if k != "versions"}}
        print(json.dumps({k: v for k, v in shown.items() if k != "train_epochs"}), flush=True)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    summary = {"device": device, "torch": torch.__version__, "preset": args.preset, "embed_dim": args.embed_dim,
               "backend": args.backend, "rows": rows}  # fmt: skip
    (args.out / "engine.json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"# Engine bars: {args.preset} preset, {args.embed_dim}-d input, {args.backend}, teacher forcing 1.0, "
        f"{device}, torch {torch.__version__}",
        "",
        "| batch | `quatrain train` seq/s (epochs 2+, median) | engine train step seq/s | ratio (bar 0.9) | "
        "`eval` test seq/s (loop) | InferenceStep seq/s | ratio (bar 0.9) | loop vs replays of its batches | "
        "setup s | with setup: ratio | decode-only test / train ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["bench"]
        dec = r.get("eval_decode_only_ratio", {})
        step_rate = b.get("train-par", {}).get("seq_per_s", float("nan"))
        lines.append(
            f"| {r['batch']} | {r['train_seq_per_s']:,.0f} | {step_rate:,.0f} "
            f"| {r.get('train_ratio', float('nan')):.2f} | {r['eval']['seq_per_s']:,.0f} "
            f"| {b.get('infer', {}).get('seq_per_s', float('nan')):,.0f} | {r.get('eval_ratio', float('nan')):.2f} "
            f"| {r.get('eval_vs_replays', float('nan')):.2f} | {r['eval']['setup_seconds']:.2f} "
            f"| {r.get('eval_wall_ratio', float('nan')):.2f} "
            f"| {dec.get('test', float('nan')):.2f} / {dec.get('train', float('nan')):.2f} |"
        )
    (args.out / "engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
