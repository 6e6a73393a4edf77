"""`quatrain convert`: converts, proves, records provenance, and refuses what it should, in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

import quatrain
from quatrain.cli import cli
from quatrain.plugins.naive import NaiveAttention
from quatrain.registry import load_registry, set_registry


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(name="saved")
def _saved(registry, tiny, tmp_path):
    model = quatrain.Autoencoder(tiny, "naive")
    return quatrain.save(model, tmp_path / "naive.safetensors", extra={"recipe": {"lr": 0.001}})


@pytest.mark.parametrize("target", ["fused-qkv", "cached-decoder"])
def test_convert_writes_a_proven_checkpoint_with_provenance(runner, saved, tmp_path, target):
    out = tmp_path / f"{target}.safetensors"
    result = runner.invoke(cli, ["convert", str(saved), "--to", target, "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "inverse          bit-identical" in result.output
    assert "forward check    worst err/bound" in result.output
    info = quatrain.read_info(out)
    assert info.backend == target
    assert json.loads(info.metadata["converted_from"]) == str(saved.resolve())
    assert json.loads(info.metadata["source_backend"]) == "naive"
    assert json.loads(info.metadata["converter"]).startswith("split-qkvo -> ")
    assert json.loads(info.metadata["recipe"]) == {"lr": 0.001}  # the source's own records are kept
    check = json.loads(info.metadata["conversion_check"])
    assert check["inverse_bit_identical"] and check["worst_ratio"] <= 1.0


def test_convert_there_and_back_is_bit_identical(runner, saved, tmp_path):
    there, back = tmp_path / "there.safetensors", tmp_path / "back.safetensors"
    assert runner.invoke(cli, ["convert", str(saved), "--to", "sdpa-flash", "-o", str(there)]).exit_code == 0
    result = runner.invoke(cli, ["convert", str(there), "--to", "naive", "-o", str(back), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["converter"] == "fused-qkv-o -> split-qkvo" and report["inverse_bit_identical"]
    original, returned = safetensors.torch.load_file(saved), safetensors.torch.load_file(back)
    assert set(original) == set(returned)
    assert all(torch.equal(original[k], returned[k]) for k in original)


def _refusal(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_refuses_unknown_backend(runner, saved, tmp_path):
    line = _refusal(runner, ["convert", str(saved), "--to", "warp", "-o", str(tmp_path / "x.safetensors")])
    assert "unknown backend 'warp'" in line and "fused-qkv" in line
    assert not (tmp_path / "x.safetensors").exists()


def test_refuses_output_equal_to_input(runner, saved):
    line = _refusal(runner, ["convert", str(saved), "--to", "fused-qkv", "-o", str(saved)])
    assert "is the input" in line


def test_refuses_existing_output_without_force(runner, saved, tmp_path):
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"keep me")
    line = _refusal(runner, ["convert", str(saved), "--to", "fused-qkv", "-o", str(out)])
    assert "exists; pass --force" in line
    assert out.read_bytes() == b"keep me"
    result = runner.invoke(cli, ["convert", str(saved), "--to", "fused-qkv", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert quatrain.read_info(out).backend == "fused-qkv"


def test_refuses_a_layout_without_conversion_path(runner, saved, tmp_path):
    class Island(NaiveAttention):
        name = "island"
        capabilities = quatrain.Capabilities(layout="island-layout")

    plugin = SimpleNamespace(register_attention_backends=quatrain.hookimpl(lambda register: register(Island)))
    set_registry(load_registry(plugins=[("island", plugin)]))
    out = tmp_path / "island.safetensors"
    line = _refusal(runner, ["convert", str(saved), "--to", "island", "-o", str(out)])
    assert "no conversion path from layout 'split-qkvo' to 'island-layout'" in line
    assert not out.exists() and not list(tmp_path.glob(".island*"))  # no partial or temporary file left
