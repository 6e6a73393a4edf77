"""The pretrained ``sonnets`` model that ships as package data: intact, as good as its card says, usable by name."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from quatrain.cli import cli
from quatrain.registry import Store, resolve_checkpoint


@pytest.fixture(name="store")
def _store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path / "home"))  # an empty store: only shipped weights
    return Store()


def test_sonnets_ships_verified_with_its_held_out_metrics(store):
    entry = store.entry("sonnets")
    assert entry.origin == "shipped"
    assert entry.verify().name == "model.safetensors"  # sha256 matches the card
    metrics = entry.card.metrics
    assert metrics["split"] == "test" and metrics["teacher_forcing"] == 0.0
    assert metrics["token_cosine"] >= 0.98 and metrics["top1"] >= 0.98
    assert resolve_checkpoint("sonnets") == entry.weights


@pytest.mark.slow
def test_reconstruct_sonnets_by_name(store):
    """Straight after install: the README's first command (loads GloVe 50-d, a few seconds)."""
    result = CliRunner().invoke(cli, ["reconstruct", "sonnets", "Shall I compare thee to a summer's day?"])
    assert result.exit_code == 0, result.output
    assert "shall i compare thee to a summer 's day ?  shall i compare thee" in result.output
