"""Tokenisation that matches the GloVe 6B vocabulary: lowercase, PTB-style punctuation and clitic splitting."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Container

NEWLINE = "<nl>"
"""The token that ends every line of a poem; it has a fixed vector (see ``quatrain.data.Embeddings``)."""
UNKNOWN = "<unk>"
"""The token that stands for every word the embeddings lack (unless unknown words are dropped)."""

# Typographic characters the poems use, mapped to what GloVe's tokeniser saw.
_NORMALISE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2014": " -- ",
        "\u2013": " - ",
        "\u2026": " ... ",
        "\u00a0": " ",
    }
)

# A word (letters/digits, with internal apostrophes, hyphens or dots), a dash run, an ellipsis, or one symbol.
_TOKEN = re.compile(r"[^\W_]+(?:['\-.][^\W_]+)*'?|--+|\.\.\.+|\S")

# PTB clitics, split from the word they end (the GloVe 6B vocabulary holds them as tokens).
_CLITICS = ("n't", "'s", "'d", "'ll", "'re", "'ve", "'m")
_SPECIAL_NT = {"can't": ["ca", "n't"], "won't": ["wo", "n't"], "shan't": ["sha", "n't"]}


def _split_word(word: str, vocab: Container[str] | None) -> list[str]:
    if word in _SPECIAL_NT:
        return list(_SPECIAL_NT[word])
    for clitic in _CLITICS:
        if word.endswith(clitic) and len(word) > len(clitic):
            return [*_split_word(word[: -len(clitic)], vocab), clitic]
    if word.endswith("'") and len(word) > 1:  # elision: th' -> th '
        return [*_split_word(word[:-1], vocab), "'"]
    if vocab is not None and word not in vocab and "-" in word:
        parts: list[str] = []
        for i, part in enumerate(word.split("-")):
            if i:
                parts.append("-")
            if part:
                parts.append(part)
        return parts
    return [word]


def tokenize(line: str, vocab: Container[str] | None = None) -> list[str]:
    """Split one line into lowercase tokens the way the GloVe 6B vocabulary expects.

    Punctuation becomes separate tokens (``--`` and ``...`` stay whole), PTB clitics are split
    (``beauty's`` -> ``beauty 's``, ``don't`` -> ``do n't``), and, when ``vocab`` is given, a hyphenated
    word it lacks is split at its hyphens (``deep-sunken`` -> ``deep - sunken``).

    Args:
        line: one line of text (no line break token is added here).
        vocab: the embeddings' words, used only to decide hyphen splits.

    Returns:
        The tokens, possibly empty.
    """
    text = unicodedata.normalize("NFKC", line.translate(_NORMALISE)).lower()
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        piece = match.group()
        if piece[0].isalnum():
            tokens.extend(_split_word(piece, vocab))
        else:
            tokens.append(piece)
    return tokens
