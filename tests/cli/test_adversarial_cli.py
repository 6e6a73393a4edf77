"""Issue 12's adversarial pass over the CLI (and issue 10's inspect check): one clear line, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import click
import pytest
import safetensors
import safetensors.torch
import torch
from click.testing import CliRunner

import quatrain
from quatrain.cli import cli
from quatrain.cli._common import QuatrainGroup


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(name="saved")
def _saved(tmp_path, tiny):
    model = quatrain.Autoencoder(tiny)
    return quatrain.save(model, tmp_path / "m.safetensors", extra={"seed": 7})


def _rewrite(path, metadata=None, tensors=None):
    loaded = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    safetensors.torch.save_file(
        tensors(loaded) if tensors else loaded, str(path), metadata=metadata(meta) if metadata else meta
    )


def _error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    return lines[0]


def test_inspect_refuses_a_checkpoint_that_does_not_load(runner, saved):
    """Issue 10: inspect exited 0 with a wrong parameter count where load refused the file."""
    _rewrite(saved, tensors=lambda t: {**t, "decoder.out.bias": torch.zeros(3)})
    result = runner.invoke(cli, ["inspect", str(saved)])
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    assert line.startswith("Error: does not load: ") and "decoder.out.bias" in line and "(3,)" in line
    with pytest.raises(quatrain.CheckpointLayoutError) as caught:
        quatrain.load(saved)
    assert str(caught.value) in line  # the same check, the same words
    as_json = runner.invoke(cli, ["inspect", str(saved), "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["loads"] is False and "decoder.out.bias" in report["problem"]


def test_inspect_of_a_good_checkpoint_says_it_loads(runner, saved):
    result = runner.invoke(cli, ["inspect", str(saved), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loads"] is True and report["problem"] is None and report["dtypes"] == ["F32"]


def test_inspect_refuses_an_int8_checkpoint(runner, saved):
    _rewrite(saved, tensors=lambda t: {k: v.to(torch.int8) for k, v in t.items()})
    result = runner.invoke(cli, ["inspect", str(saved)])
    assert result.exit_code == 1
    assert "does not load: " in _error_line(result) and "int8" in _error_line(result)


def test_inspect_shortens_huge_metadata_values(runner, saved):
    """Finding 17: inspect printed a 50 MB metadata value to stdout."""
    _rewrite(saved, metadata=lambda m: {**m, "note": json.dumps("x" * 2_000_000)})
    result = runner.invoke(cli, ["inspect", str(saved)])
    assert result.exit_code == 0, result.output[:300]
    assert len(result.output) < 20_000 and "characters)" in result.output


def test_inspect_of_a_folder_says_it_is_a_folder(runner, tmp_path):
    """Finding 21: inspect /tmp said 'does not exist'."""
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "is a folder" in _error_line(result)


def test_a_closed_stdout_is_not_an_internal_error(saved):
    """Finding 14: 'quatrain inspect sonnets | head -2' printed 'internal error: BrokenPipeError'."""
    process = subprocess.Popen(
        [sys.executable, "-m", "quatrain", "inspect", str(saved)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    process.wait(timeout=120)
    assert "internal error" not in err and "BrokenPipe" not in err and "Traceback" not in err, err


def _group_with(command):
    group = QuatrainGroup()
    group.add_command(command)
    return group


def test_warnings_are_one_line_without_a_source_path(runner):
    """Finding 15: a corrupt selection cache printed a raw UserWarning with its source path and line."""

    @click.command()
    def noisy() -> None:
        warnings.warn("ignoring unreadable selection cache '/x/selection.json': bad", UserWarning, stacklevel=1)

    result = runner.invoke(_group_with(noisy), ["noisy"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "warning: ignoring unreadable selection cache '/x/selection.json': bad"


def test_long_messages_are_shortened(runner):
    """Finding 17: a 20 MB metadata value gave a 20 MB error line."""

    @click.command()
    def loud() -> None:
        raise quatrain.ConfigError("bad value " + "x" * 10_000_000)

    result = runner.invoke(_group_with(loud), ["loud"])
    assert result.exit_code == 1
    assert len(result.output) < 1000 and "characters)" in result.output


def test_os_errors_are_one_line(runner, tmp_path):
    @click.command()
    def reader() -> None:
        open(tmp_path / "missing" / "x")  # noqa: SIM115 - the error is the point

    result = runner.invoke(_group_with(reader), ["reader"])
    assert result.exit_code == 1
    assert "No such file or directory" in _error_line(result)


def test_throttled_progress_is_silent_for_quick_work_and_regular_for_long_work():
    """Finding 23: long work reports as it goes; quick work prints nothing."""
    from quatrain.cli._common import Throttled

    now = [0.0]
    shown: list[tuple[int, int, str]] = []
    quick = Throttled(lambda *a: shown.append(a), after=2.0, every=2.0)
    quick.clock = lambda: now[0]
    quick.start = 0.0
    for step in range(1, 11):
        now[0] = step * 0.1
        quick(step, 10, "decoding windows")
    assert shown == []
    slow = Throttled(lambda *a: shown.append(a), after=2.0, every=2.0)
    slow.clock = lambda: now[0]
    slow.start = 0.0
    for step in range(1, 101):
        now[0] = step * 0.1  # 10 s in all
        slow(step, 100, "searching nearest words")
    assert shown[0][0] == 20 and shown[-1] == (100, 100, "searching nearest words")
    assert 4 <= len(shown) <= 6


def test_eval_stages_go_to_a_terminals_stderr_only(monkeypatch, capsys):
    """Finding 23: eval was silent for about 20 s; a terminal now hears what it is doing (stdout stays clean)."""
    from quatrain.cli import _common

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _common.stage("eval: loading")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    _common.stage("eval: hidden")
    captured = capsys.readouterr()
    assert captured.err == "eval: loading\n" and captured.out == ""
