"""Training data: poetry corpora, GloVe-matching tokenisation, word vectors, windows and the poem-level split."""

from .._errors import CorpusError as CorpusError
from .._errors import DataError as DataError
from .._errors import EmbeddingsError as EmbeddingsError
from ._corpus import PROSODIC_EXCLUDED as PROSODIC_EXCLUDED
from ._corpus import Corpus as Corpus
from ._corpus import load_corpus as load_corpus
from ._corpus import split_poems as split_text
from ._dataset import PoetryData as PoetryData
from ._dataset import Windows as Windows
from ._dataset import build_data as build_data
from ._dataset import cut_windows as cut_windows
from ._dataset import encode_poem as encode_poem
from ._dataset import split_poems as split_poems
from ._embeddings import GLOVE as GLOVE
from ._embeddings import Embeddings as Embeddings
from ._embeddings import cache_dir as cache_dir
from ._embeddings import load_embeddings as load_embeddings
from ._tokens import NEWLINE as NEWLINE
from ._tokens import UNKNOWN as UNKNOWN
from ._tokens import tokenize as tokenize

__all__ = [
    "GLOVE",
    "NEWLINE",
    "PROSODIC_EXCLUDED",
    "UNKNOWN",
    "Corpus",
    "CorpusError",
    "DataError",
    "Embeddings",
    "EmbeddingsError",
    "PoetryData",
    "Windows",
    "build_data",
    "cache_dir",
    "cut_windows",
    "encode_poem",
    "load_corpus",
    "load_embeddings",
    "split_poems",
    "split_text",
    "tokenize",
]
