"""Issue 12's adversarial pass over the zoo: bad entries are flagged, not fatal; cards are checked; runs locked."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

import quatrain
from quatrain import hookimpl
from quatrain.cli import cli
from quatrain.registry import Store, load_registry, set_registry

from .test_zoo import _MiniCard


@pytest.fixture(name="home")
def _home(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(name="stored")
def _stored(home, tiny):
    return Store().put(
        "mine", quatrain.Autoencoder(tiny), description="a test model", metrics={"token_cosine": 0.5, "top1": 0.25}
    )


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def _rows(result):
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.stdout)}


def _edit_card(entry, **changes):
    path = entry.folder / "card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "damage",
    ["leftover-old", "upper-case", "unknown-field", "dangling-removing-link", "many-parameters", "bad-json"],
)
def test_list_shows_the_good_entries_and_flags_a_bad_one(stored, home, damage):
    """Findings 7 and 13: one bad store entry made 'zoo list' exit 1 and list nothing."""
    root = home / "models"
    if damage == "leftover-old":
        shutil.copytree(stored.folder, root / ".tiny.999.old")
        bad = ".tiny.999.old"
    elif damage == "upper-case":
        shutil.copytree(stored.folder, root / "Tiny")
        bad = "Tiny"
    elif damage == "dangling-removing-link":
        os.symlink(root / "gone", root / ".evil.7.removing")
        bad = ".evil.7.removing"
    else:
        shutil.copytree(stored.folder, root / "other")
        bad = "other"
        if damage == "unknown-field":
            _edit_card(Store().entry("other"), surprise=1)
        elif damage == "many-parameters":
            _edit_card(Store().entry("other"), num_parameters="many")
        else:
            (root / "other" / "card.json").write_text("{oops")
    rows = _rows(run("zoo", "list", "--json"))
    assert rows["mine"]["status"] == "store" and rows["mine"]["problems"] == []
    assert rows[bad]["status"] == "broken" and rows[bad]["problems"], rows[bad]
    text = run("zoo", "list")
    assert text.exit_code == 0 and "internal error" not in text.output
    assert f"! {bad}: " in text.output and "mine" in text.output


def test_hand_edited_metrics_are_flagged_and_not_shown(stored):
    """Finding 18: faked metrics showed in zoo list."""
    _edit_card(stored, metrics={"token_cosine": 0.999, "top1": 0.999})
    row = _rows(run("zoo", "list", "--json"))["mine"]
    assert row["status"] == "broken" and row["metrics"] == {}
    assert any("edited after it was stored" in p for p in row["problems"])
    assert "0.999" not in run("zoo", "list").output


def test_a_card_named_for_another_folder_is_flagged(stored, home):
    """Finding 18: a card named 'seed' inside folder 'tiny' confused list and show."""
    shutil.copytree(stored.folder, home / "models" / "tiny")
    row = _rows(run("zoo", "list", "--json"))["tiny"]
    assert any("names 'mine' but it is in folder 'tiny'" in p for p in row["problems"])
    show = run("zoo", "show", "tiny", "--json")
    assert show.exit_code == 0 and json.loads(show.stdout)["problems"]


def test_a_card_config_that_disagrees_with_the_weights_is_flagged(stored):
    config = dict(stored.card.config.to_dict(), hidden_size=64)
    _edit_card(stored, config=config, seal="")  # an unsealed card (as older stores wrote) is checked too
    row = _rows(run("zoo", "list", "--json"))["mine"]
    assert any("config disagrees with the weights" in p for p in row["problems"])


def test_list_and_show_flag_a_sha256_mismatch(stored):
    """Finding 18: list and show never flagged a sha256 mismatch."""
    stored.weights.write_bytes(stored.weights.read_bytes() + b"x")
    row = _rows(run("zoo", "list", "--json"))["mine"]
    assert row["status"] == "broken" and any("sha256" in p for p in row["problems"])
    show = run("zoo", "show", "mine")
    assert show.exit_code == 0 and "PROBLEM" in show.output and "sha256" in show.output


def test_rm_of_a_symlinked_model_removes_the_link_only(stored, home, tmp_path):
    """Finding 8: 'zoo rm' of a symlinked model failed half-way and left a '.removing' link."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(stored.folder), elsewhere)
    os.symlink(elsewhere, home / "models" / "mine")
    result = run("zoo", "rm", "mine", "--yes")
    assert result.exit_code == 0, result.output
    assert not (home / "models" / "mine").exists() and not (home / "models" / "mine").is_symlink()
    assert (elsewhere / "model.safetensors").is_file()  # what the link pointed to is the user's
    assert list((home / "models").iterdir()) == []
    assert run("zoo", "list").exit_code == 0


def test_rm_of_a_broken_model(stored):
    (stored.folder / "card.json").write_text("{oops")
    result = run("zoo", "rm", "mine", "--yes")
    assert result.exit_code == 0, result.output
    assert not stored.folder.exists()


def test_quatrain_home_pointing_at_a_file_is_one_line(tmp_path, monkeypatch, registry):
    """Finding 13: QUATRAIN_HOME pointing at a file printed 'internal error'."""
    target = tmp_path / "a-file"
    target.write_text("")
    monkeypatch.setenv("QUATRAIN_HOME", str(target))
    for args in (["zoo", "list"], ["zoo", "path"], ["zoo", "rm", "x", "--yes"]):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "is not a folder" in result.output and "internal error" not in result.output


def test_zoo_train_refuses_while_another_process_trains_the_same_name(home, tmp_path):
    """Finding 6: two 'zoo train tiny' at once shared runs/tiny with no lock."""
    set_registry(load_registry(plugins=[("mini-card", _MiniCard(tmp_path))]))
    store = Store()
    with store.lock("mini"):
        result = run("zoo", "train", "mini", "--epochs", "1")
    assert result.exit_code == 1
    assert "is being trained by another process" in result.output and "--wait" in result.output
    assert not (home / "runs" / "mini" / "model.safetensors").exists()
    with store.lock("mini"):  # released after each use: it can be taken again
        pass


def test_zoo_train_json_and_progress_on_stderr(home, tmp_path):
    """Finding 23: zoo train had no --json, and its epoch lines went to stdout."""
    set_registry(load_registry(plugins=[("mini-card", _MiniCard(tmp_path))]))
    result = run("zoo", "train", "mini", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "mini" and report["metrics"]["split"] == "test" and report["best_epoch"] == 1
    assert "epoch   1" in result.stderr


def test_zoo_train_of_a_shipped_model_needs_force(home, monkeypatch):
    """Finding 20: 'zoo train sonnets --epochs 1' silently shadowed the shipped model (0.994) with a 0.801 one."""
    result = run("zoo", "train", "sonnets", "--epochs", "1")
    assert result.exit_code == 1
    assert "ships with quatrain" in result.output and "--force" in result.output
    assert not (home / "runs" / "sonnets").exists()


class _ShippedMini(_MiniCard):
    """The mini card, with weights shipped in a folder (as the sonnets model ships with quatrain)."""

    def __init__(self, folder, weights):
        super().__init__(folder)
        self.weights = weights

    @hookimpl
    def register_models(self, register):
        register("mini", description="ships in a test", config="tiny", recipe=self.recipe, weights=str(self.weights))


def test_force_retrains_a_shipped_model_and_its_description_says_so(home, tmp_path, tiny):
    """Finding 20: the retrained model's description still said it shipped with quatrain."""
    shipped = Store(tmp_path / "ship", cards={}).put("mini", quatrain.Autoencoder(tiny), description="ships in a test")
    set_registry(load_registry(plugins=[("mini-card", _ShippedMini(tmp_path, shipped.folder))]))
    refused = run("zoo", "train", "mini", "--epochs", "1")
    assert refused.exit_code == 1 and "--force" in refused.output
    result = run("zoo", "train", "mini", "--epochs", "1", "--force")
    assert result.exit_code == 0, result.output
    entry = Store().entry("mini")
    assert entry.origin == "store" and "retrained here" in entry.card.description
    assert "shadows the model that ships with mini-card" in entry.card.description
