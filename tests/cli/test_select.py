"""``quatrain select``: the chosen backend and one line per candidate; named backends refused with reasons."""

from __future__ import annotations

import json
import re

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
    assert any(re.match(r"  fast-wrong: failed correctness: .*: err \S+ > bound \S+ \(k=", line) for line in lines)
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


def test_named_backend_is_checked_and_used_as_named(fakes):
    result = run("select", "--backend", "naive", "--preset", "tiny", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "backend: naive (named)"


MEAN_OF_V = """
    import torch
    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class MeanOfV(NaiveAttention):
        \"\"\"Skips the scores: every query gets the mean of the unmasked values. Fast, and wrong.\"\"\"

        name = "mean-v"

        def _attend(self, queries, memory, key_mask):
            B, T, H = queries.shape
            keep = key_mask[..., None].to(memory.dtype)  # (B, S, 1)
            mean = (self.w_v(memory) * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, H)
            weights = (keep[..., 0] / keep.sum(1).clamp(min=1.0))[:, None, None, :]
            return self.w_o(mean)[:, None, :].expand(B, T, H), weights.expand(B, self.num_heads, T, -1)

    @hookimpl
    def register_attention_backends(register):
        register(MeanOfV)
"""


def test_named_wrong_third_party_backend_is_refused_with_its_errors(install):
    install("acme-mean-v", {"mean-v": MEAN_OF_V})
    named = ("select", "--backend", "mean-v", "--preset", "tiny", "--device", "cpu")
    result = run(*named)
    assert result.exit_code == 1, result.output
    assert "backend 'mean-v' failed its correctness check against 'naive' (cpu, float32, train): " in result.output
    assert re.search(r"(output|grad) \S*.*: err \S+ > bound \S+ \(k=\d+ x naive \S+ \+ floor \S+\)", result.output)
    assert "Traceback" not in result.output and "(named)" not in result.output
    forced = run(*named, "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.splitlines()[0] == "backend: mean-v (named, forced past a failed correctness check)"
    assert "warning: using backend 'mean-v' although it failed its correctness check" in forced.stderr


def test_force_without_a_named_backend_is_a_usage_error(fakes):
    result = run(*JOB, "--force")
    assert result.exit_code == 2 and "--force applies to a named backend" in result.output


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


@pytest.mark.parametrize("spelling", ["--precision", "--dtype"])
def test_a_tf32_job_off_cuda_is_refused_in_one_line(fakes, spelling):
    """--precision, as train, eval, reconstruct and bench spell it; --dtype, its earlier name, still works."""
    result = run("select", "--preset", "tiny", "--device", "cpu", spelling, "tf32")
    assert result.exit_code == 2
    assert "TF32 is the tensor-core float32 arithmetic of NVIDIA GPUs, and this job runs on cpu" in result.output
    assert "--precision" in result.output
