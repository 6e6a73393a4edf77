"""Issue 12, finding 23: a corpus too small to split is refused before it is tokenised."""

from __future__ import annotations

import pytest

from quatrain.data import DataError, _dataset, build_data, load_corpus, load_embeddings


def test_a_one_line_corpus_is_refused_before_tokenising(tmp_path, poetry_files, monkeypatch):
    """A 10 MB one-line corpus (one poem) was tokenised for 2 min 20 s before it failed."""
    _, vectors = poetry_files
    one = tmp_path / "one.txt"
    one.write_text(" ".join(["the rose of night"] * 1000) + "\n")
    monkeypatch.setattr(_dataset, "encode_poem", lambda *a, **k: pytest.fail("tokenised first"))
    with pytest.raises(DataError, match="holds 1 poem\\(s\\), too few for a train/val/test split"):
        build_data(load_corpus(one), load_embeddings(vectors), max_len=12)


def test_a_split_that_would_leave_val_empty_is_refused():
    with pytest.raises(DataError, match="too few"):
        _dataset.split_poems(2, 0, 0.1, 0.0)
    assert _dataset.split_poems(2, 0, 0.0, 0.0)["train"] == [0, 1]
