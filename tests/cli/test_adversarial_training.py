"""Issue 12's adversarial pass over train / eval / reconstruct / bench: outputs and devices checked first."""

from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from quatrain.cli._main import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_args(corpus, vectors, out, *extra, epochs="1"):
    return [
        "train", "--preset", "tiny", "--corpus", str(corpus), "--embeddings", str(vectors), "--epochs", epochs,
        "--batch-size", "8", "--device", "cpu", "--val-word-tokens", "16", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(name="trained_once", scope="module")
def _trained_once(shared_poetry_files):
    corpus, vectors = shared_poetry_files
    out = corpus.parent / "run" / "m.safetensors"
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(name="trained")
def _trained(trained_once, tmp_path):
    for path in trained_once.parent.glob("m.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "m.safetensors"


@pytest.fixture(name="no_data")
def _no_data(monkeypatch):
    """Fails the test if the data starts loading: the refusal must come first."""
    import quatrain._recipe

    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before the refusal")

    monkeypatch.setattr(quatrain._recipe, "prepare_data", refuse)


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    return lines[0]


def test_train_refuses_to_replace_an_earlier_run(trained, shared_poetry_files, no_data):
    """Finding 3: train --out over a finished run replaced its checkpoint, state and log."""
    corpus, vectors = shared_poetry_files
    before = {p.name: p.read_bytes() for p in trained.parent.glob("m.*")}
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, trained))
    assert result.exit_code == 1
    assert "already exist" in _one_error(result) and "--force" in _one_error(result)
    assert {p.name: p.read_bytes() for p in trained.parent.glob("m.*")} == before


def test_train_refuses_to_overwrite_a_text_file(tmp_path, shared_poetry_files, no_data):
    """Finding 3: --out notes.txt overwrote a text file with safetensors bytes."""
    corpus, vectors = shared_poetry_files
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, notes))
    assert result.exit_code == 1 and "already exist" in _one_error(result)
    assert notes.read_text() == "my notes\n"


def test_train_force_replaces_and_creates_missing_folders(tmp_path, shared_poetry_files):
    """Findings 3 and 16: --force replaces; --out runs/small.safetensors works where runs/ does not exist."""
    corpus, vectors = shared_poetry_files
    out = tmp_path / "runs" / "deeper" / "m.safetensors"
    first = CliRunner().invoke(cli, _train_args(corpus, vectors, out))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, _train_args(corpus, vectors, out, "--force", "--seed", "3"))
    assert again.exit_code == 0, again.output
    log = out.with_name("m.log.jsonl").read_text().splitlines()
    assert len(log) == 1 and out.is_file()


def test_train_checks_that_it_can_write_before_loading_data(tmp_path, shared_poetry_files, no_data):
    """Finding 9: an unwritable --out failed only after a whole epoch."""
    corpus, vectors = shared_poetry_files
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, blocker / "m.safetensors"))
    assert result.exit_code == 1
    assert "cannot write to" in _one_error(result)


def test_resume_with_no_epochs_left_says_so(trained, shared_poetry_files, tmp_path, no_data):
    """Finding 21: --resume m --out other with no epochs left printed 'saved other' but wrote nothing."""
    result = CliRunner().invoke(cli, ["train", "--resume", str(trained), "--out", str(tmp_path / "other.safetensors")])
    assert result.exit_code == 1
    assert "has done all 1 epochs" in _one_error(result)
    assert not (tmp_path / "other.safetensors").exists()


@pytest.mark.parametrize(
    ("device", "message"),
    [("mps", "MPS is not available"), ("cpu:5", "the CPU has no index"), ("tpu", "not a device name")],
)
def test_every_command_refuses_a_device_it_cannot_use(trained, shared_poetry_files, device, message, no_data):
    """Findings 13 and 21: --device mps printed 'internal error'; --device cpu:5 was accepted."""
    corpus, vectors = shared_poetry_files
    commands = [
        [*_train_args(corpus, vectors, trained.with_name("x.safetensors"))[:-4], "--device", device, "--out", "x"],
        ["eval", str(trained), "--device", device],
        ["reconstruct", str(trained), "the rose", "--device", device],
        ["zoo", "train", "tiny", "--device", device],
    ]
    if device == "mps":  # bench takes a choice of cpu, cuda and mps: other names are usage errors (exit 2)
        commands.append(["bench", "--preset", "tiny", "--device", device])
    for args in commands:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in _one_error(result), (args, result.output)


def test_cuda_is_refused_in_one_line_without_cuda(trained):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for args in (["eval", str(trained), "--device", "cuda"], ["bench", "--preset", "tiny", "--device", "cuda"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "CUDA is not available" in _one_error(result)


def test_train_refuses_a_backend_that_cannot_run_here(tmp_path, shared_poetry_files, no_data):
    """Finding 5: train --backend mps ran on a CPU machine and saved a checkpoint labelled mps."""
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    corpus, vectors = shared_poetry_files
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, out, "--backend", "mps"))
    assert result.exit_code == 1
    assert "backend 'mps' cannot run on cpu here: mps does not run on cpu" in _one_error(result)
    assert not out.exists()


def test_inline_config_with_a_preset_works_like_the_preset(tmp_path, shared_poetry_files):
    """Finding 21: --config '{"preset":"tiny"}' failed where --preset tiny worked."""
    from quatrain import read_info

    corpus, vectors = shared_poetry_files
    args = _train_args(corpus, vectors, tmp_path / "a.safetensors")
    at = args.index("--preset")
    inline = [*args[:at], "--config", '{"preset": "tiny", "rnn": "gru"}', *args[at + 2 :]]
    result = CliRunner().invoke(cli, inline)
    assert result.exit_code == 0, result.output
    config = read_info(tmp_path / "a.safetensors").config
    assert config.rnn == "gru" and config.embed_dim == 16 and config.hidden_size == 32


def test_lr_help_states_the_range_train_accepts():
    """Finding 21: --lr help said x>0, but 20 was refused later."""
    result = CliRunner().invoke(cli, ["train", "--lr", "20", "--out", "x"])
    assert result.exit_code == 2 and "0<x<=10" in result.output


def test_eval_output_has_no_bad_ordinal(trained):
    """Finding 21: 'every 1th'."""
    result = CliRunner().invoke(cli, ["eval", str(trained), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1th" not in result.output and "cosine by position" in result.output


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.mark.parametrize(
    ("path", "command"), list(_commands(cli)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_option_has_help(path, command):
    """Finding 22: --help had no text for a dozen options of train, eval and reconstruct."""
    bare = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help and p.name != "help"]
    assert not bare, f"quatrain {' '.join(path)}: options without help: {', '.join(bare)}"


def test_bench_checks_its_outputs_before_measuring(tmp_path, monkeypatch):
    """Finding 9: bench --out nodir/x.json ran the whole benchmark, then lost it to FileNotFoundError."""
    import quatrain.registry

    monkeypatch.setattr(quatrain.registry, "run_bench", lambda *a, **k: pytest.fail("measured first"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for option in ("--out", "--markdown", "--plot"):
        result = CliRunner().invoke(cli, ["bench", "--preset", "tiny", option, str(blocker / "x")])
        assert result.exit_code == 1, result.output
        assert "cannot write to" in _one_error(result), result.output


def test_bench_creates_the_folder_of_its_outputs(tmp_path, monkeypatch):
    import quatrain.registry

    def fake(*args, **kwargs):
        raise RuntimeError("stop after the output checks")

    monkeypatch.setattr(quatrain.registry, "run_bench", fake)
    out = tmp_path / "nodir" / "x.json"
    CliRunner().invoke(cli, ["bench", "--preset", "tiny", "--out", str(out)])
    assert out.parent.is_dir()


def test_bench_refuses_an_empty_backend_list():
    """Finding 21: bench --backends '' ran naive only."""
    result = CliRunner().invoke(cli, ["bench", "--preset", "tiny", "--backends", ""])
    assert result.exit_code != 0 and "--backends" in result.output


def test_a_relative_corpus_path_is_stored_resolved(tmp_path, shared_poetry_files, monkeypatch):
    """Finding 10: a relative --corpus was stored as given, so eval from another folder failed."""
    from quatrain import read_info

    corpus, vectors = shared_poetry_files
    work = tmp_path / "work"
    (work / "corp").mkdir(parents=True)
    shutil.copy(corpus, work / "corp" / "c.txt")
    shutil.copy(vectors, work / "v.txt")
    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli, _train_args("corp/c.txt", "v.txt", tmp_path / "m.safetensors"))
    assert result.exit_code == 0, result.output
    recipe = json.loads(read_info(tmp_path / "m.safetensors").metadata["train"])
    assert recipe["corpus"] == str(work / "corp" / "c.txt") and recipe["embeddings"] == str(work / "v.txt")
    data = json.loads(read_info(tmp_path / "m.safetensors").metadata["data"])
    assert len(data["fingerprint"]) == 64  # the corpus's fingerprint is recorded beside its path
    monkeypatch.chdir(tmp_path)
    evaluated = CliRunner().invoke(cli, ["eval", str(tmp_path / "m.safetensors"), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output


@pytest.mark.slow
def test_nproc_with_a_bad_corpus_is_a_few_lines_without_torchruns_traceback(tmp_path):
    """Finding 15: train --nproc 2 with a bad corpus printed about 40 lines of torchrun traceback."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not text\n")
    args = ["train", "--nproc", "2", "--preset", "tiny", "--corpus", str(bad), "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "m.safetensors")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "quatrain", *args], capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "ChildFailedError" not in output and "SIGTERM" not in output, output
    assert "is not UTF-8" in output and len(output.strip().splitlines()) <= 5, output


def test_every_command_that_takes_a_backend_refuses_one_that_cannot_run_here(trained, monkeypatch, tmp_path):
    """Finding 5: every command that takes a backend refuses an unavailable one, with its reasons."""
    import torch

    import quatrain.registry

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    monkeypatch.setenv("QUATRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(quatrain.registry, "run_bench", lambda *a, **k: pytest.fail("measured first"))
    for args in (
        ["eval", str(trained), "--device", "cpu", "--backend", "mps"],
        ["reconstruct", str(trained), "the rose", "--device", "cpu", "--backend", "mps"],
        ["zoo", "train", "tiny", "--device", "cpu", "--backend", "mps"],
        ["bench", "--preset", "tiny", "--device", "cpu", "--backends", "naive,mps"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "mps does not run on cpu" in _one_error(result), (args, result.output)
    assert not (tmp_path / "home" / "runs" / "tiny" / "model.safetensors").exists()
