"""The data pipeline's errors: a bad corpus or bad embeddings, each naming the file and the place."""

from __future__ import annotations

from .._errors import QuatrainError


class DataError(QuatrainError, ValueError):
    """Training data cannot be used as given."""


class CorpusError(DataError):
    """A corpus is missing, empty, not UTF-8, or malformed (e.g. a JSON record without ``text``)."""


class EmbeddingsError(DataError):
    """Embeddings are missing, ragged, non-finite or otherwise unusable."""
