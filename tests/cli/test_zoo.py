"""``quatrain zoo``: listing, showing, removing and locating named models; errors are one line."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import quatrain
from quatrain import hookimpl
from quatrain.cli import cli
from quatrain.registry import Store, load_registry, set_registry


@pytest.fixture(name="home")
def _home(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(name="stored")
def _stored(home, tiny):
    return Store().put(
        "mine", quatrain.Autoencoder(tiny), description="a test model", metrics={"token_cosine": 0.5, "top1": 0.25}
    )


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_list_shows_cards_and_stored_models(stored):
    result = run("zoo", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "store" in lines["mine"] and "0.500" in lines["mine"] and "0.250" in lines["mine"]
    assert "not trained" in lines["seed"]
    rows = {r["name"]: r for r in json.loads(run("zoo", "list", "--json").output)}
    assert rows["mine"]["status"] == "store" and rows["mine"]["folder"] == str(stored.folder)
    assert rows["tiny"]["plugin"] == "models"


def test_show_a_stored_model(stored):
    result = run("zoo", "show", "mine")
    assert result.exit_code == 0, result.output
    assert "a test model" in result.output and stored.card.sha256 in result.output
    report = json.loads(run("zoo", "show", "mine", "--json").output)
    assert report["stored"]["sha256"] == stored.card.sha256 and "card" not in report


def test_show_a_card_without_weights(home):
    result = run("zoo", "show", "seed")
    assert result.exit_code == 0, result.output
    assert "not trained" in result.output and "hidden_size       512" in result.output
    assert json.loads(run("zoo", "show", "seed", "--json").output)["card"]["config"]["hidden_size"] == 512


@pytest.mark.parametrize("args", [("show", "nope"), ("rm", "nope", "--yes"), ("path", "nope")], ids=lambda a: a[0])
def test_unknown_names_are_one_line_errors(home, args):
    result = run("zoo", *args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: no zoo model 'nope'; known: {', '.join(_known())}"]


def _known():
    return sorted(Store().cards)


def test_rm_asks_first_unless_yes(stored):
    assert run("zoo", "rm", "mine", input="n\n").exit_code == 1
    assert stored.folder.exists()
    result = run("zoo", "rm", "mine", input="y\n")
    assert result.exit_code == 0 and "removed mine" in result.output
    assert not stored.folder.exists()


def test_rm_with_yes_and_a_card_only_model(stored):
    assert run("zoo", "rm", "mine", "--yes").exit_code == 0
    result = run("zoo", "rm", "seed", "--yes")
    assert result.exit_code == 1 and "has a card but no weights" in result.output


def test_path(stored, home):
    assert run("zoo", "path").output.strip() == str(home / "models")
    assert run("zoo", "path", "mine").output.strip() == str(stored.folder)
    assert run("zoo", "path", "mine", "--weights").output.strip() == str(stored.weights)
    assert run("zoo", "path", "--weights").exit_code == 2


def test_path_weights_refuses_altered_weights(stored):
    stored.weights.write_bytes(stored.weights.read_bytes() + b"x")
    result = run("zoo", "path", "mine", "--weights")
    assert result.exit_code == 1 and "sha256" in result.output and len(result.output.strip().splitlines()) == 1


def test_inspect_takes_a_zoo_name(stored):
    result = run("inspect", "mine", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["path"] == str(stored.weights) and report["metadata"]["zoo_name"] == "mine"
    stored.weights.write_bytes(stored.weights.read_bytes() + b"x")
    assert "sha256" in run("inspect", "mine").output


class _MiniCard:
    """A card whose recipe trains on a tiny corpus and 16-d vectors written into tmp_path."""

    def __init__(self, folder):
        words = [
            "the",
            "a",
            "sun",
            "moon",
            "day",
            "night",
            "sea",
            "sky",
            "rose",
            "thee",
            "shall",
            "i",
            "compare",
            "to",
            "summer's",
        ]
        vectors = torch.randn(len(words) + 1, 16, generator=torch.Generator().manual_seed(1))
        lines = [f"{w} {' '.join(f'{v:.4f}' for v in row)}" for w, row in zip([*words, "summer"], vectors, strict=True)]
        (folder / "vectors.txt").write_text("\n".join(lines) + "\n")
        poems = [" ".join(words[(i + j) % len(words)] for j in range(5)) for i in range(40)]
        (folder / "poems.txt").write_text("\n\n".join(poems) + "\n")
        self.recipe = {
            "corpus": str(folder / "poems.txt"),
            "embeddings": str(folder / "vectors.txt"),
            "epochs": 3,
            "batch_size": 8,
            "val_word_tokens": 0,
            "device": "cpu",
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        }

    @hookimpl
    def register_models(self, register):
        register("mini", description="trained in a test", config="tiny", recipe=self.recipe)


def test_zoo_train_trains_measures_and_stores_a_card(home, tmp_path):
    set_registry(load_registry(plugins=[("mini-card", _MiniCard(tmp_path))]))
    result = run("zoo", "train", "mini", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "epoch   2" in result.output and "stored mini in" in result.output
    entry = Store().entry("mini")
    card = entry.card
    assert card.description == "trained in a test" and entry.origin == "store"
    assert card.metrics["split"] == "test" and card.metrics["teacher_forcing"] == 0.0
    assert card.metrics["tokens"] > 0 and -1 <= card.metrics["token_cosine"] <= 1 and 0 <= card.metrics["top1"] <= 1
    assert card.recipe["command"] == "quatrain zoo train mini --epochs 2" and card.recipe["epochs"] == 2
    assert card.data["fingerprint"] and set(card.data["poems"]) == {"train", "val", "test"}
    assert (home / "runs" / "mini" / "model.log.jsonl").is_file()
    result = run("zoo", "train", "mini", "--resume")  # up to the recipe's 3 epochs, from epoch 2's state
    assert result.exit_code == 0, result.output
    assert "epoch   3" in result.output and "epoch   1" not in result.output
    assert Store().entry("mini").card.recipe["command"] == "quatrain zoo train mini --resume"


def test_zoo_train_resume_needs_a_run(home, tmp_path):
    set_registry(load_registry(plugins=[("mini-card", _MiniCard(tmp_path))]))
    result = run("zoo", "train", "mini", "--resume")
    assert result.exit_code == 1 and "no interrupted run of 'mini' to resume" in result.output


def test_show_an_untrained_card_prints_its_reference_run(home):
    result = run("zoo", "show", "seed")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("reference"))
    assert "gpu_seed_retrain.sh" in line and "0.99988" in line
