"""The CLI skeleton: help everywhere, JSON that parses, one-line errors with the right exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import quatrain
from quatrain.cli import cli


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("args", [(), *_commands(cli)], ids=lambda a: " ".join(a) or "quatrain")
def test_every_command_has_help(runner, args):
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and "quatrain, version" in result.output


def test_backends_json(runner):
    result = runner.invoke(cli, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    naive = next(b for b in data["backends"] if b["name"] == "naive")
    assert naive["distribution"] == "quatrain" and naive["available"] is True and naive["reasons"] == []
    assert {
        "devices",
        "dtypes",
        "training",
        "inference",
        "returns_weights",
        "parallel_decode",
        "deterministic",
        "exact",
        "layout",
        "warmup",
        "requires",
    } <= set(naive["capabilities"])


def test_backends_reports_reasons_for_a_missing_device(runner):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(cli, ["backends", "--device", "cuda", "--json"])
    naive = next(b for b in json.loads(result.output)["backends"] if b["name"] == "naive")
    assert naive["available"] is False
    assert naive["reasons"][0]["code"] == "device" and naive["reasons"][0]["hint"]
    human = runner.invoke(cli, ["backends", "--device", "cuda"])
    assert "naive: no cuda device on this machine" in human.output


def test_doctor_json(runner):
    result = runner.invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"device", "device_name", "cuda_available", "mps_available", "torch_version", "threads", "compiler"} <= set(
        data["hardware"]
    )
    assert data["versions"]["torch"] and data["versions"]["quatrain"]
    assert any(p["name"] == "naive" and p["status"] == "ok" for p in data["plugins"])
    assert data["backends"]["naive"]["available"] is True


def test_inspect(runner, tmp_path, tiny):
    model = quatrain.Autoencoder(tiny)
    path = quatrain.save(model, tmp_path / "m.safetensors", extra={"seed": 7})
    result = runner.invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["backend"] == "naive" and data["layout"] == "split-qkvo"
    assert data["num_parameters"] == model.num_parameters()
    assert data["config"] == tiny.to_dict() and data["metadata"] == {"seed": 7}
    human = runner.invoke(cli, ["inspect", str(path)])
    assert f"{model.num_parameters():,}" in human.output


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"\x80not safetensors", "not a readable safetensors file")],
    ids=["missing", "garbage"],
)
def test_bad_checkpoint_is_one_line_exit_1(runner, tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_debug_shows_the_traceback(runner, tmp_path):
    result = runner.invoke(cli, ["--debug", "inspect", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "CheckpointError" in result.output


def test_usage_errors_exit_2(runner):
    assert runner.invoke(cli, ["backends", "--device", "tpu"]).exit_code == 2
    assert runner.invoke(cli, ["no-such-command"]).exit_code == 2


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from quatrain.cli import cli; cli(['--help'], standalone_mode=False); print(sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in out.strip().splitlines()[-1]
