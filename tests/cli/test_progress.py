"""Progress (cli/_progress.py) and tables (cli/_common.table): plain lines off a terminal, a live bar on one,
never a byte on stdout."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from quatrain.cli._common import table
from quatrain.cli._main import cli
from quatrain.cli._progress import StepProgress, TrainingProgress

RECORD = {"val_loss": 0.25, "val_cosine": 0.5, "val_word_top1": 0.75, "val_word_tokens": 64, "seconds": 1.5}
RECORD["val_seconds"] = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, force_interactive=False), buffer


def test_off_a_terminal_progress_is_plain_lines_a_line_per_interval_and_per_epoch(capsys):
    console, buffer = _plain()
    clock = Clock()
    with TrainingProgress(2, console=console, every=30, clock=clock) as bar:
        bar.batch(1, 1, 4, None, 10.0)  # loss not read from the device yet
        clock.now += 10
        bar.batch(1, 2, 4, None, 12.0)  # < 30 s since the epoch began: no line
        assert buffer.getvalue() == ""
        clock.now += 30
        bar.batch(1, 3, 4, 0.5, 1234.0)
        bar.batch(1, 4, 4, None, 1300.0)  # the last loss read is the one shown
        bar.batch(1, 4, 4, None, 1300.0)  # called again at the end: no second line
        bar.epoch(RECORD)
        bar.batch(2, 4, 4, 0.125, 50.0)
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "epoch 1/2  3/4 batches  loss 0.5000  1,234 seq/s  0:40  eta 0:13",
        "epoch 1/2  4/4 batches  loss 0.5000  1,300 seq/s  0:40",
        "  val loss 0.2500  cosine 0.5000  word top-1 0.7500 (on 64 tokens)  1.5s train + 0.5s val",
        "epoch 2/2  4/4 batches  loss 0.1250  50 seq/s  0:00",
    ]
    assert "\r" not in buffer.getvalue() and "\x1b" not in buffer.getvalue()
    assert capsys.readouterr().out == ""


def test_a_loss_never_read_shows_as_unknown_and_a_partial_record_still_prints():
    console, buffer = _plain()
    with TrainingProgress(1, console=console) as bar:
        bar.batch(1, 5, 5, None, 3.0)
        bar.epoch({"val_loss": 0.5, "val_cosine": None})
    assert buffer.getvalue().splitlines() == ["epoch 1/1  5/5 batches  loss -  3 seq/s  0:00", "  val loss 0.5000"]


def test_on_a_terminal_a_live_bar_is_drawn_and_finished_epochs_stay_as_lines(capsys):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, force_interactive=True, width=120, color_system=None)
    with TrainingProgress(2, console=console) as bar:
        assert bar.live
        for done in range(1, 6):
            bar.batch(1, done, 5, None if done < 3 else 0.25, 100.0 * done)
        bar.epoch(RECORD)
    text = buffer.getvalue()
    assert "\x1b[?25l" in text  # the cursor hidden while live (rich's Live), shown again at the end
    assert "epoch 1/2  5/5 batches  loss 0.2500  500 seq/s" in text
    assert "val loss 0.2500  cosine 0.5000" in text
    assert bar.progress is not None and bar.progress.tasks == []  # the finished epoch's bar is gone
    assert capsys.readouterr().out == ""


def test_a_progress_never_updated_draws_nothing_even_on_a_terminal():
    """A data-parallel rank other than 0 gets no progress calls: it must not take over the terminal."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, force_interactive=True, width=80)
    with TrainingProgress(3, console=console) as bar, StepProgress(console=console):
        assert bar.live
    assert buffer.getvalue() == ""


def test_steps_off_a_terminal_are_numbered_lines_and_on_one_a_bar():
    console, buffer = _plain()
    with StepProgress(console=console) as progress:
        for done, label in enumerate(["naive train", "naive infer", "done"]):
            progress(done, 2, label)
    assert buffer.getvalue().splitlines() == ["[0/2] naive train", "[1/2] naive infer", "[2/2] done"]
    live = io.StringIO()
    console = Console(file=live, force_terminal=True, force_interactive=True, width=100, color_system=None)
    with StepProgress(console=console) as progress:
        progress(0, 2, "naive train")
        progress(2, 2, "done")
        assert progress.progress is not None and progress.progress.tasks[0].completed == 2
    assert "2/2" in live.getvalue() and "done" in live.getvalue()


def test_train_json_keeps_stdout_clean_and_progress_on_stderr(shared_poetry_files, tmp_path):
    corpus, vectors = shared_poetry_files
    args = ["train", "--preset", "tiny", "--corpus", str(corpus), "--embeddings", str(vectors), "--epochs", "2"]
    args += ["--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "m.safetensors"), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert report["epochs"] == 2
    progress = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in progress] == ["epoch 1/2", "epoch 2/2"]
    assert all("seq/s" in line for line in progress)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # plain lines: CliRunner's stderr is no tty


def test_tables_align_columns_keep_text_literal_and_fit_a_width():
    assert table([["rose", "1"], ["nightingale", "22"]], ["WORD", "N"]).splitlines() == [
        "WORD         N",
        "rose         1",
        "nightingale  22",
    ]
    assert table([], ["A", "B"]) == "A  B"
    literal = table([["[bold]x[/bold]", ":rose:"]], ["A", "B"])
    assert "[bold]x[/bold]" in literal and ":rose:" in literal  # never markup nor emoji codes
    assert table([["詩", "a"], ["ab", "b"]], ["W", "X"]).splitlines()[1:] == ["詩  a", "ab  b"]  # 詩: two cells
    narrow = table([["x" * 50, "word " * 10]], ["A", "B"], width=30).splitlines()
    assert max(len(line) for line in narrow) <= 30 and len(narrow) > 2  # long cells wrapped to the width
    assert table([["x" * 300]], ["A"], width=0).splitlines()[1] == "x" * 300  # width 0: never wrapped


@pytest.mark.parametrize("cell", ["", " padded ", "tab\there"])
def test_tables_take_awkward_cells(cell):
    lines = table([[cell, "end"]], ["A", "B"]).splitlines()
    assert len(lines) == 2 and lines[1].endswith("end")
