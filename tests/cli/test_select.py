"""``quatrain select``: the chosen backend and one line per candidate; named backends refused with reasons."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from quatrain import hookimpl
from quatrain.cli import cli
from quatrain.plugins import naive
from quatrain.plugins.naive import NaiveAttention
from quatrain.registry import load_registry, set_registry


class FastWrong(NaiveAttention):
    name = "fast-wrong"

    def parallel(self, queries, state, need_weights=False):
        context, weights = super().parallel(queries, state, need_weights)
        return context * 2.0, weights


class Fakes:
    @hookimpl
    def register_attention_backends(self, register):
        register(FastWrong)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """A private decision cache for every test."""
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(name="fakes")
def _fakes():
    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("fakes", Fakes())])
    set_registry(registry)
    return registry


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


JOB = ("select", "--preset", "tiny", "--device", "cpu", "--batch-size", "2", "--steps", "10")


def test_auto_prints_the_choice_and_one_line_per_candidate(fakes):
    result = run(*JOB)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "backend: naive (measured now)"
    assert lines[2].startswith("  naive: chosen (")
    assert any(line.startswith("  fast-wrong: failed correctness: rel. error") for line in lines)
    again = run(*JOB)
    assert again.stdout.splitlines()[0] == "backend: naive (cached decision)"
    assert run(*JOB, "--refresh").stdout.splitlines()[0] == "backend: naive (measured now)"


def test_json(fakes):
    result = run(*JOB, "--infer", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "naive"
    assert data["job"]["mode"] == "infer" and data["job"]["steps"] == 10
    assert {c["name"]: c["status"] for c in data["candidates"]} == {"naive": "chosen", "fast-wrong": "failed"}


def test_named_backend_that_cannot_run_is_refused_with_reasons(registry):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    result = run("select", "--backend", "mps", "--preset", "tiny", "--device", "cpu")
    assert result.exit_code == 1
    assert "backend 'mps' cannot run this job (cpu, float32, train): mps does not run on cpu" in result.output


def test_named_backend_is_used_as_named(fakes):
    result = run("select", "--backend", "fast-wrong", "--preset", "tiny", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "backend: fast-wrong (named)"


def test_config_file(fakes, tmp_path):
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"preset": "tiny", "max_len": 6}))
    result = run("select", "--config", str(config), "--device", "cpu", "--batch-size", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["job"]["config"]["max_len"] == 6


def test_preset_and_config_together_are_a_usage_error(fakes, tmp_path):
    config = tmp_path / "model.json"
    config.write_text("{}")
    result = run("select", "--preset", "tiny", "--config", str(config))
    assert result.exit_code == 2
    assert "not both" in result.output
