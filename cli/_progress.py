"""Progress on stderr, drawn by rich: a live bar with rate and ETA on a terminal, plain lines anywhere else.

stdout is never written (so ``--json`` output stays clean), and nothing here reads a device value: the
trainer passes the numbers it already has on the host, and a loss it has not read yet as ``None``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_D = TypeVar("_D", bound="_Display")

PLAIN_EVERY_S = 30.0
"""Without a terminal, a line at least this often during long work (and one when each part ends)."""


def stderr_console() -> Console:
    """A console on stderr that draws live only on an interactive terminal (never when stderr is a pipe or
    file, whatever FORCE_COLOR says)."""
    tty = sys.stderr.isatty()
    return Console(stderr=True, force_terminal=None if tty else False, force_interactive=None if tty else False)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


class _Display:
    """A rich live display on an interactive console, or none; a context manager that stops it at the end."""

    def __init__(self, console: Console | None, columns: tuple[Any, ...]) -> None:
        self.console = console or stderr_console()
        self.live = self.console.is_interactive
        self.progress: Progress | None = None
        if self.live:
            self.progress = Progress(*columns, console=self.console, redirect_stdout=False, redirect_stderr=True)
        self.started = False
        self.file: IO[str] | None = self.console.file if console is not None else None

    def start(self) -> None:
        if self.progress is not None and not self.started:
            self.progress.start()
        self.started = True

    def line(self, text: str) -> None:
        """One plain line on stderr (above the live bar, if there is one)."""
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, file=self.file or sys.stderr)

    def close(self) -> None:
        if self.progress is not None and self.started:
            self.progress.stop()
        self.started = False

    def __enter__(self: _D) -> _D:
        return self  # drawing starts with the first update (a rank that never reports never draws)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class TrainingProgress(_Display):
    """The trainer's progress: ``batch(...)`` after optimiser steps, ``epoch(record)`` after each validation.

    On a terminal: a bar per epoch with batches done, loss, sequences/s, elapsed time and the epoch's ETA;
    each finished epoch stays as one line. Elsewhere: one line every ``every`` seconds and one per epoch.

    Args:
        epochs: the run's last epoch (for ``epoch 3/20``).
        console: where to draw (default: stderr; tests pass their own).
        every: seconds between plain lines within an epoch.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        epochs: int,
        console: Console | None = None,
        every: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            console,
            (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            ),
        )
        self.epochs = epochs
        self.every = every
        self.clock = clock
        self.task: TaskID | None = None
        self.current: int | None = None
        self.loss: float | None = None
        self.began = self.last_line = 0.0
        self.finished: set[int] = set()

    def _text(self, epoch: int, done: int, total: int, seq_per_s: float, eta: bool) -> str:
        elapsed = self.clock() - self.began
        parts = [f"epoch {epoch}/{self.epochs}", f"{done}/{total} batches", self._loss(), f"{seq_per_s:,.0f} seq/s"]
        parts.append(_duration(elapsed))
        if eta and 0 < done < total:
            parts.append(f"eta {_duration(elapsed * (total - done) / done)}")
        return "  ".join(parts)

    def _loss(self) -> str:
        return "loss -" if self.loss is None else f"loss {self.loss:.4f}"

    def batch(self, epoch: int, done: int, total: int, loss: float | None, seq_per_s: float) -> None:
        """After ``done`` of ``total`` steps of ``epoch``. ``loss``: the running mean so far, or ``None`` when the
        trainer has not read it from the device yet (the last one read is shown)."""
        if not self.started:
            self.start()
        if epoch != self.current:
            self.current, self.began, self.last_line = epoch, self.clock(), self.clock()
            self.loss = None
            if self.progress is not None:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=total, loss="", rate="")
        if loss is not None:
            self.loss = float(loss)
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task, completed=done, total=total, loss=self._loss(), rate=f"{seq_per_s:,.0f} seq/s"
            )
        now = self.clock()
        if done >= total:
            if epoch not in self.finished:
                self.finished.add(epoch)
                self.line(self._text(epoch, done, total, seq_per_s, eta=False))
                if self.progress is not None and self.task is not None:
                    self.progress.remove_task(self.task)
                    self.task = None
        elif self.progress is None and now - self.last_line >= self.every:
            self.last_line = now
            self.line(self._text(epoch, done, total, seq_per_s, eta=True))

    def epoch(self, record: dict[str, Any]) -> None:
        """After an epoch's validation: its log record (``val_loss``, ``val_cosine``, ``val_word_top1``, ...)."""
        parts = []
        for key, label in (("val_loss", "val loss"), ("val_cosine", "cosine"), ("val_word_top1", "word top-1")):
            if isinstance(record.get(key), int | float):
                parts.append(f"{label} {record[key]:.4f}")
        if "val_word_tokens" in record and parts and parts[-1].startswith("word top-1"):
            parts[-1] += f" (on {record['val_word_tokens']} tokens)"
        if isinstance(record.get("seconds"), int | float) and isinstance(record.get("val_seconds"), int | float):
            parts.append(f"{record['seconds']:.1f}s train + {record['val_seconds']:.1f}s val")
        self.line("  " + "  ".join(parts))


class StepProgress(_Display):
    """Progress through a known number of labelled steps (bench's measurements): ``progress(done, total, label)``
    before each step. On a terminal: a bar with the step's label, steps done, elapsed time and ETA. Elsewhere:
    one line per step, ``[done/total] label``.

    Args:
        console: where to draw (default: stderr).
    """

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(
            console,
            (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            ),
        )
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.started:
            self.start()
        if self.progress is None:
            self.line(f"[{done}/{total}] {label}")
            return
        if self.task is None:
            self.task = self.progress.add_task(label, total=total)
        self.progress.update(self.task, completed=done, total=total, description=label)
