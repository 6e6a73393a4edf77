"""The zoo store: folder layout, card contents, atomic replacement, sha256 checks, shipped weights, resolving."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import quatrain
from quatrain import CheckpointError
from quatrain.registry import ModelIntegrityError, Store, UnknownModelError, quatrain_home, resolve_checkpoint
from quatrain.registry._cards import make_card
from quatrain.registry._store import CARD_FORMAT, sha256_file


@pytest.fixture(name="model")
def _model(tiny):
    return quatrain.Autoencoder(tiny).eval()


@pytest.fixture(name="store")
def _store(tmp_path, registry):
    return Store(tmp_path / "store", cards={})


def _put(store, model, name="poems", **kw):
    return store.put(
        name,
        model,
        description=kw.pop("description", "my poems"),
        metrics={"token_cosine": 0.99, "top1": 0.98},
        recipe={"epochs": 3},
        data={"fingerprint": "abc123"},
        **kw,
    )


def test_put_writes_weights_and_a_complete_card(store, model):
    entry = _put(store, model)
    folder = store.root / "poems"
    assert entry.folder == folder and entry.origin == "store"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    card = json.loads((folder / "card.json").read_text())
    assert card["format"] == CARD_FORMAT
    assert card["name"] == "poems" and card["description"] == "my poems"
    assert card["config"] == model.config.to_dict()
    assert (card["backend"], card["layout"]) == ("naive", "split-qkvo")
    assert card["metrics"] == {"token_cosine": 0.99, "top1": 0.98}
    assert card["recipe"] == {"epochs": 3} and card["data"] == {"fingerprint": "abc123"}
    assert card["sha256"] == sha256_file(folder / "model.safetensors")
    assert card["created"].endswith("+00:00")
    assert set(card["versions"]) == {"quatrain", "torch", "python"}
    assert card["num_parameters"] == model.num_parameters()
    info = quatrain.read_info(folder / "model.safetensors")  # a normal checkpoint: inspect/eval read it
    assert json.loads(info.metadata["zoo_name"]) == "poems"


def test_load_gives_back_the_same_model(store, model, tiny):
    _put(store, model)
    x, mask = torch.randn(2, 5, tiny.embed_dim), torch.ones(2, 5, dtype=torch.bool)
    loaded = store.load("poems").eval()
    torch.testing.assert_close(loaded(x, mask).reconstruction, model(x, mask).reconstruction, rtol=0, atol=0)


def test_a_second_put_replaces_the_first_and_leaves_no_debris(store, model, tiny):
    first = _put(store, model)
    second = _put(store, quatrain.Autoencoder(tiny), description="retrained")
    assert second.card.sha256 != first.card.sha256 and second.card.description == "retrained"
    assert [p.name for p in store.root.iterdir()] == ["poems"]
    assert store.entry("poems").verify() == store.root / "poems" / "model.safetensors"


def test_a_failed_put_keeps_the_old_model_and_no_staging_folder(store, model):
    _put(store, model)
    before = store.entry("poems").card.sha256

    class Exploding(quatrain.Autoencoder):
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk full")

    broken = Exploding(model.config)
    with pytest.raises(RuntimeError, match="disk full"):
        _put(store, broken)
    assert [p.name for p in store.root.iterdir()] == ["poems"]
    assert store.entry("poems").card.sha256 == before
    store.load("poems")


def test_altered_weights_are_refused_by_sha256(store, model):
    _put(store, model)
    weights = store.root / "poems" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"zoo model 'poems': .* has sha256 .* its card records"):
        store.load("poems")


def test_missing_weights_and_bad_cards_are_clear_errors(store, model):
    _put(store, model)
    (store.root / "poems" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors' is missing"):
        store.weights_path("poems")
    (store.root / "poems" / "card.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="is not a quatrain zoo card"):
        store.entry("poems")
    (store.root / "poems" / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        store.entry("poems")


def test_remove(store, model):
    _put(store, model)
    store.remove("poems")
    assert not store.root.joinpath("poems").exists() and list(store.root.iterdir()) == []
    with pytest.raises(UnknownModelError, match="no zoo model 'poems'"):
        store.remove("poems")


def test_put_checkpoint_copies_a_checkpoint_and_refuses_other_files(store, model, tmp_path):
    path = quatrain.save(model, tmp_path / "m.safetensors")
    entry = store.put_checkpoint("copied", path, description="d")
    assert entry.card.sha256 == sha256_file(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        store.put_checkpoint("junk", tmp_path / "junk.safetensors")
    assert not (store.root / "junk").exists()


@pytest.fixture(name="shipped")
def _shipped(tmp_path, model):
    """A card whose weights 'ship' in a folder written by another store, as package data would be."""
    source = Store(tmp_path / "package-data", cards={})
    _put(source, model, name="bundled", description="shipped poems")
    card = make_card("bundled", description="card text", config="tiny", recipe={}, weights=source.root / "bundled")
    untrained = make_card("later", description="not trained yet", config="tiny", recipe={})
    return {"bundled": card, "later": untrained}


def test_shipped_weights_are_found_verified_and_shadowed_by_the_store(tmp_path, shipped, tiny):
    store = Store(tmp_path / "store", cards=shipped)
    entry = store.entry("bundled")
    assert entry.origin == "shipped" and entry.card.description == "shipped poems"
    assert [e.card.name for e in store.entries()] == ["bundled"]
    store.load("bundled")
    with pytest.raises(CheckpointError, match="ships with plugin"):
        store.remove("bundled")
    _put(store, quatrain.Autoencoder(tiny), name="bundled", description="retrained here")
    assert store.entry("bundled").origin == "store"
    store.remove("bundled")
    assert store.entry("bundled").origin == "shipped"


def test_a_card_without_weights_says_how_to_train_it(tmp_path, shipped):
    store = Store(tmp_path / "store", cards=shipped)
    with pytest.raises(UnknownModelError, match="'later' has a card but no weights yet; train it with"):
        store.entry("later")


def test_resolve_checkpoint(tmp_path, shipped, model):
    store = Store(tmp_path / "store", cards=shipped)
    path = quatrain.save(model, tmp_path / "m.safetensors")
    assert resolve_checkpoint(path, store) == path
    assert resolve_checkpoint("bundled", store) == shipped["bundled"].weights / "model.safetensors"
    with pytest.raises(
        CheckpointError, match=r"'nope' is neither a checkpoint file nor a trained zoo model: .*bundled"
    ):
        resolve_checkpoint("nope", store)
    with pytest.raises(CheckpointError, match="has a card but no weights"):
        resolve_checkpoint("later", store)
    with pytest.raises(CheckpointError, match="checkpoint 'missing/m.safetensors' does not exist"):
        resolve_checkpoint("missing/m.safetensors", store)


def test_resolve_checkpoint_refuses_altered_shipped_weights(tmp_path, shipped):
    weights = shipped["bundled"].weights / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelIntegrityError):
        resolve_checkpoint("bundled", Store(tmp_path / "store", cards=shipped))


def test_home_is_overridable_and_defaults_to_the_user_data_dir(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path / "home"))
    assert quatrain_home() == tmp_path / "home"
    assert Store(cards={}).root == tmp_path / "home" / "models"
    monkeypatch.delenv("QUATRAIN_HOME")
    assert str(quatrain_home()) == platformdirs.user_data_dir("quatrain", appauthor=False)


def test_the_default_store_uses_the_registry_cards(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path))
    store = Store()
    assert {"seed", "sonnets", "tiny"} <= set(store.cards)
    with pytest.raises(UnknownModelError, match="'seed' has a card but no weights"):
        store.entry("seed")
    shutil.rmtree(tmp_path)  # nothing was created by reading
