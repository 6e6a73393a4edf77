"""``quatrain bench``: the --json schema on the tiny preset, files written, errors before any measuring."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from quatrain.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


QUICK = ("bench", "--preset", "tiny", "--device", "cpu", "--backends", "naive", "--iters", "2", "--warmup", "1")


def test_json_schema_on_the_tiny_preset(registry, tmp_path):
    out, md = tmp_path / "run.json", tmp_path / "run.md"
    result = run(*QUICK, "--batch-size", "2", "--json", "--out", str(out), "--markdown", str(md))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    assert set(report) >= {"schema", "date", "machine", "versions", "setup", "variants", "unavailable", "summary"}
    assert report["setup"]["preset"] == "tiny" and report["setup"]["iters"] == 2
    assert [v["name"] for v in report["variants"]] == ["none", "naive"]
    fields = {"median_ms", "q1_ms", "q3_ms", "iqr_ms", "warmup_ms", "peak_mem_mb", "x_baseline", "x_naive", "path"}
    for v in report["variants"]:
        for mode in ("train-seq", "train-par", "infer"):
            assert fields <= set(v["modes"][mode])
    assert report["summary"]["train-seq"]["best"] == "naive"
    assert "| naive | reference |" in md.read_text()
    assert "[0/" in result.stderr  # progress on stderr, not in the JSON


def test_rounds_are_pooled_and_named_in_the_heading(registry, tmp_path):
    md = tmp_path / "run.md"
    result = run(*QUICK, "--batch-size", "2", "--rounds", "2", "--json", "--markdown", str(md))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["setup"]["rounds"] == 2
    assert all(v["modes"]["infer"]["iters"] == 4 for v in report["variants"])
    assert "2 rounds of 2 steps, each after 1 warm-up, the variants in turn" in md.read_text()
    assert "(round 2/2)" in result.stderr


def test_table_and_summary(registry):
    result = run(*QUICK, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "train tf 0.9 ms" in result.stdout
    assert "best sequential train step (tf 0.9): naive" in result.stdout


def test_plot_writes_a_png(registry, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bars.png"
    result = run(*QUICK, "--batch-size", "2", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_measuring(registry, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    result = run(*QUICK, "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 1
    assert "--plot needs matplotlib" in result.output
    assert "[0/" not in result.output


def test_unknown_backend_is_one_line_before_measuring(registry):
    result = run("bench", "--preset", "tiny", "--backends", "naive,nope")
    assert result.exit_code == 1
    assert "unknown backend 'nope'" in result.output
    assert "[0/" not in result.output


def test_bf16_precision_times_the_trainers_autocast(registry, monkeypatch):
    """--precision bf16: float32 weights and the engine's bf16 autocast, what `quatrain train --precision bf16`
    runs (every train and inference step the bench times goes through it)."""
    import torch

    import quatrain.registry._measure as measure
    from quatrain import ModelConfig
    from quatrain._rnn import autocast_problem

    if (problem := autocast_problem(ModelConfig.preset("tiny").rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    seen = []

    def spying(cls):
        class Spy(cls):
            def __init__(self, *args, **kwargs):
                seen.append((cls.__name__, kwargs.get("precision")))
                super().__init__(*args, **kwargs)

        return Spy

    monkeypatch.setattr(measure, "TrainStep", spying(measure.TrainStep))
    monkeypatch.setattr(measure, "InferenceStep", spying(measure.InferenceStep))
    result = run(*QUICK, "--batch-size", "2", "--precision", "bf16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["setup"]["precision"] == "bf16" and report["setup"]["dtype"] == "float32"
    assert {name for name, _ in seen} == {"TrainStep", "InferenceStep"}
    assert {precision for _, precision in seen} == {"bf16"}


def test_bf16_precision_over_a_bf16_model_is_refused_before_measuring(registry):
    result = run(*QUICK, "--precision", "bf16", "--dtype", "bf16")
    assert result.exit_code == 2
    assert "leave --dtype at fp32" in result.output
    assert "[0/" not in result.output


def test_tf32_precision_off_cuda_is_refused_before_measuring(registry):
    """--precision tf32 is NVIDIA tensor-core arithmetic: on a CPU it would change nothing, so it is refused."""
    result = run(*QUICK, "--precision", "tf32")
    assert result.exit_code == 2
    assert "TF32 is the tensor-core float32 arithmetic of NVIDIA GPUs, and this job runs on cpu" in result.output
    assert "[0/" not in result.output
