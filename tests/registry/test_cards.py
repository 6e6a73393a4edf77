"""Model cards: the built-in ones, validation that names the card, and clashes between plugins."""

from __future__ import annotations

import pytest

from quatrain import ModelConfig, PluginError, hookimpl
from quatrain.registry import UnknownModelError, get_card, get_cards, load_registry, set_registry
from quatrain.registry._cards import check_name, config_from_spec, make_card, resolve_weights


def test_builtin_cards_come_from_the_models_entry_point(registry):
    cards = get_cards()
    assert {"seed", "sonnets", "tiny"} <= set(cards)
    # GloVe 50-d (no 300-d vectors ship), trained without the preset's dropout
    assert cards["seed"].config == ModelConfig.preset("seed", embed_dim=50, dropout=0.0)
    assert (cards["sonnets"].plugin, cards["sonnets"].distribution) == ("models", "quatrain")
    assert registry.plugins["models"].models == ("seed", "sonnets", "tiny")
    assert cards["sonnets"].weights is not None and cards["sonnets"].weights.parts[-2:] == ("zoo_data", "sonnets")
    assert cards["seed"].weights is None


def test_the_seed_card_records_the_run_that_met_its_bars(registry):
    """The card's reference names a committed run folder, and its figures are that run's test metrics."""
    import json
    from pathlib import Path

    reference = get_cards()["seed"].reference
    folder = Path(__file__).resolve().parents[2] / reference["run"].split("(")[1].rstrip(")")
    test = json.loads((folder / "test.json").read_text())
    assert reference["test"]["token_cosine"] == round(test["cosine"], 5) and test["cosine"] >= 0.999
    assert reference["test"]["word_top1"] == test["word_top1"] >= 0.999
    assert (reference["best_epoch"], reference["test"]["tokens"]) == (test["epoch"], test["tokens"])
    assert get_cards()["seed"].to_dict()["reference"] == reference
    with pytest.raises(PluginError, match="reference must be a mapping"):
        make_card("x", description="d", config="tiny", recipe={}, reference=[1])


def test_unknown_card_lists_the_known_ones(registry):
    with pytest.raises(UnknownModelError, match=r"no model card 'nope'; cards: .*sonnets"):
        get_card("nope")


@pytest.mark.parametrize("name", ["", "Upper", "../evil", ".hidden", "a/b", "x" * 65, 3])
def test_bad_names_are_refused(name):
    with pytest.raises(Exception, match="invalid zoo name"):
        check_name(name)


def test_config_spec_forms():
    assert config_from_spec("tiny") == ModelConfig.preset("tiny")
    assert config_from_spec({"preset": "tiny", "hidden_size": 64}).hidden_size == 64
    assert config_from_spec(ModelConfig.preset("tiny").to_dict()) == ModelConfig.preset("tiny")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"config": "huge"}, "model card 'm': unknown preset 'huge'"),
        ({"config": {"preset": "tiny", "colour": 1}}, "model card 'm': unknown config field"),
        ({"config": 5}, "model card 'm': a card's config must be"),
        ({"recipe": [1]}, "model card 'm': recipe must be a mapping"),
    ],
    ids=["preset", "field", "type", "recipe"],
)
def test_make_card_errors_name_the_card(fields, message):
    kwargs = {"description": "d", "config": "tiny", "recipe": {}, **fields}
    with pytest.raises(PluginError, match=message):
        make_card("m", **kwargs)


def test_weights_spec_resolves_package_folders(tmp_path):
    assert resolve_weights(None) is None
    assert resolve_weights(str(tmp_path)) == tmp_path
    folder = resolve_weights("quatrain:zoo_data/sonnets")
    assert folder is not None and folder.name == "sonnets"
    with pytest.raises(Exception, match="package 'no_such_pkg' is not importable"):
        resolve_weights("no_such_pkg:x")


class _Cards:
    def __init__(self, *names: str, config: object = "tiny") -> None:
        self.names, self.config = names, config

    @hookimpl
    def register_models(self, register):
        for name in self.names:
            register(name, description=f"{name} card", config=self.config, recipe={"epochs": 1})


def test_a_duplicate_card_name_breaks_only_the_second_plugin():
    registry = load_registry(entry_points=False, plugins=[("first", _Cards("poems")), ("second", _Cards("poems", "x"))])
    assert registry.plugins["first"].status == "ok" and registry.plugins["first"].models == ("poems",)
    record = registry.plugins["second"]
    assert record.status == "broken"
    assert "model card 'poems' is registered by both 'first' and 'second'" in record.error
    assert set(registry.models) == {"poems"}  # nothing of the broken plugin's is kept ('x' neither)


def test_a_bad_card_marks_its_plugin_broken_and_others_load():
    registry = load_registry(entry_points=False, plugins=[("bad", _Cards("m", config="huge")), ("good", _Cards("g"))])
    assert registry.plugins["bad"].status == "broken"
    assert "model card 'm': unknown preset 'huge'" in registry.plugins["bad"].error
    set_registry(registry)
    assert set(get_cards()) == {"g"}
    assert get_card("g").recipe == {"epochs": 1}
