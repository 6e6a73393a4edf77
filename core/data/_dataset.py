"""From poems to training windows: token ids, windows of at most max_len tokens, a poem-level split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from .._errors import DataError
from ._corpus import Corpus
from ._embeddings import Embeddings
from ._tokens import NEWLINE, UNKNOWN, tokenize

SPLITS = ("train", "val", "test")
UNKNOWN_POLICIES = ("vector", "drop")


def encode_poem(poem: Sequence[str], embeddings: Embeddings, unknown: str = "vector") -> tuple[list[int], int, int]:
    """Token ids of a poem: each line's tokens followed by ``<nl>``.

    Args:
        poem: its lines.
        embeddings: the vocabulary.
        unknown: 'vector' maps a word the embeddings lack to ``<unk>``; 'drop' leaves it out.

    Returns:
        (ids, number of word tokens, number of those the embeddings know).
    """
    if unknown not in UNKNOWN_POLICIES:
        raise DataError(f"unknown-word policy must be one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
    index = embeddings.index
    unk, nl = index[UNKNOWN], index[NEWLINE]
    ids: list[int] = []
    words = known = 0
    for line in poem:
        for token in tokenize(line, index):
            words += 1
            found = index.get(token)
            if found is not None:
                known += 1
                ids.append(found)
            elif unknown == "vector":
                ids.append(unk)
        ids.append(nl)
    return ids, words, known


def cut_windows(ids: Sequence[int], newline_id: int, max_len: int) -> list[list[int]]:
    """Cut a poem's ids into consecutive windows of at most ``max_len`` tokens, every token in exactly one.

    Whole lines are packed greedily into a window; a line longer than ``max_len`` is cut into pieces.
    """
    lines: list[list[int]] = []
    current: list[int] = []
    for i in ids:
        current.append(i)
        if i == newline_id:
            lines.append(current)
            current = []
    if current:
        lines.append(current)
    windows: list[list[int]] = []
    window: list[int] = []
    for line in lines:
        if len(window) + len(line) <= max_len:
            window += line
            continue
        if window:
            windows.append(window)
            window = []
        while len(line) > max_len:
            windows.append(line[:max_len])
            line = line[max_len:]
        window = list(line)
    if window:
        windows.append(window)
    return windows


def split_poems(num_poems: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """A deterministic poem-level split: a seeded permutation cut into test, val and train poem indices."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val ({val_fraction}) and test ({test_fraction}) fractions must be >= 0 and sum below 1")
    order = np.random.default_rng(seed).permutation(num_poems).tolist()
    n_test = round(num_poems * test_fraction)
    n_val = round(num_poems * val_fraction)
    if num_poems >= 3:  # every split gets a poem when asked for one
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    if n_test + n_val >= num_poems or (val_fraction > 0 and n_val == 0) or (test_fraction > 0 and n_test == 0):
        raise DataError(f"{num_poems} poem(s) are too few for a train/val/test split")
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


@attrs.frozen(eq=False)
class Windows:
    """The windows of one split, padded: ids (N, T) int64 and lengths (N,)."""

    ids: Tensor
    lengths: Tensor
    poems: Tensor
    """(N,) index of the poem each window came from."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def mask(self) -> Tensor:
        return torch.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def _pack(windows: list[list[int]], poems: list[int], max_len: int) -> Windows:
    ids = torch.zeros(len(windows), max_len, dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
    return Windows(
        ids=ids,
        lengths=torch.tensor([len(w) for w in windows], dtype=torch.long),
        poems=torch.tensor(poems, dtype=torch.long),
    )


@attrs.frozen(eq=False)
class PoetryData:
    """A corpus encoded for one embedding vocabulary and cut into split windows; what training reads."""

    corpus: Corpus
    embeddings: Embeddings
    max_len: int
    seed: int
    unknown: str
    split: dict[str, list[int]]
    """Poem indices per split: 'train', 'val', 'test'."""
    windows: dict[str, Windows]
    summary: dict[str, Any]

    def vectors(self, ids: Tensor) -> Tensor:
        """Word vectors (…, E) of token ids, as a float32 tensor."""
        table = torch.from_numpy(self.embeddings.vectors)
        return table[ids]

    def split_metadata(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild exactly this data (and check that the corpus is the same)."""
        return {
            "corpus": self.corpus.name,
            "embeddings": self.embeddings.name,
            "fingerprint": self.corpus.fingerprint(),
            "max_len": self.max_len,
            "seed": self.seed,
            "unknown": self.unknown,
            "split": self.split,
        }


def build_data(
    corpus: Corpus,
    embeddings: Embeddings,
    max_len: int,
    seed: int = 0,
    unknown: str = "vector",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split: Mapping[str, Sequence[int]] | None = None,
) -> PoetryData:
    """Encode ``corpus``, cut windows and split by poem.

    A poem none of whose words the embeddings know is dropped (and counted in the summary); the split
    is over the poems that remain.

    Args:
        corpus: the poems.
        embeddings: the vocabulary and vectors.
        max_len: the longest window, in tokens (``<nl>`` included).
        seed: seeds the split.
        unknown: 'vector' (unknown words become ``<unk>``) or 'drop'.
        val_fraction, test_fraction: shares of the poems held out.
        split: reuse this split (poem indices per split, from a checkpoint) instead of making one.

    Raises:
        DataError: no poem has a known word; a split that does not fit the corpus.
    """
    held_out = (val_fraction > 0) + (test_fraction > 0)
    if split is None and len(corpus.poems) < held_out + 1:  # before minutes of tokenising (issue 12, finding 23)
        raise DataError(
            f"corpus {corpus.name!r} holds {len(corpus.poems)} poem(s), too few for a train/val/test split "
            f"(it needs {held_out + 1}; poems are separated by blank lines)"
        )
    encoded: list[list[int]] = []
    kept: list[int] = []
    words = known = 0
    dropped: list[str] = []
    for number, poem in enumerate(corpus.poems):
        ids, w, k = encode_poem(poem, embeddings, unknown)
        words += w
        known += k
        if k == 0:
            dropped.append(corpus.sources[number])
            continue
        kept.append(number)
        encoded.append(ids)
    if not encoded:
        raise DataError(f"no poem of corpus {corpus.name!r} has a word that embeddings {embeddings.name!r} know")
    chosen: dict[str, list[int]]
    if split is None:
        local = split_poems(len(encoded), seed, val_fraction, test_fraction)
        chosen = {name: [kept[i] for i in local[name]] for name in SPLITS}
    else:
        chosen = {name: [int(i) for i in split.get(name, [])] for name in SPLITS}
        listed = sorted(i for name in SPLITS for i in chosen[name])
        if listed != kept:
            raise DataError(
                f"the saved split lists {len(listed)} poems but corpus {corpus.name!r} gives {len(kept)}: "
                "the corpus, embeddings or unknown-word policy changed"
            )
    position = {poem: i for i, poem in enumerate(kept)}
    nl = embeddings.index[NEWLINE]
    windows: dict[str, Windows] = {}
    counts: dict[str, dict[str, int]] = {}
    longest = 0
    for name in SPLITS:
        rows: list[list[int]] = []
        owners: list[int] = []
        for number in chosen[name]:
            ids = encoded[position[number]]
            longest = max(longest, len(ids))
            cut = cut_windows(ids, nl, max_len)
            rows += cut
            owners += [number] * len(cut)
        windows[name] = _pack(rows, owners, max_len)
        counts[name] = {"poems": len(chosen[name]), "windows": len(rows), "tokens": windows[name].num_tokens}
    summary = {
        "corpus": corpus.name,
        "embeddings": embeddings.name,
        "vocabulary": len(embeddings),
        "dim": embeddings.dim,
        "poems": len(corpus.poems),
        "poems_dropped_no_known_word": len(dropped),
        "lines": corpus.num_lines,
        "word_tokens": words,
        "known_word_tokens": known,
        "coverage": round(known / words, 4) if words else 0.0,
        "unknown_words": unknown,
        "max_len": max_len,
        "longest_poem_tokens": longest,
        "windows": sum(c["windows"] for c in counts.values()),
        "tokens": sum(c["tokens"] for c in counts.values()),
        "split": counts,
    }
    return PoetryData(
        corpus=corpus,
        embeddings=embeddings,
        max_len=max_len,
        seed=seed,
        unknown=unknown,
        split=chosen,
        windows=windows,
        summary=summary,
    )
