"""What every command shares: the error policy, JSON output, and small Click types."""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

MESSAGE_LIMIT = 400
"""Longest message line shown; a hand-edited value of 20 MB must not become a 20 MB line (issue 12, finding 17)."""


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text):,} characters)"


def one_line(error: BaseException) -> str:
    """An exception as the one (bounded) line a user sees."""
    text = str(error).strip().splitlines()
    return shorten(text[0]) if text else type(error).__name__


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one line on stderr, without the source path and line Python would print."""
    click.echo(f"warning: {one_line(message) if isinstance(message, Warning) else shorten(str(message))}", err=True)


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``quatrain inspect sonnets | head -2``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
    except (OSError, ValueError):  # stdout is not a real file (e.g. under CliRunner)
        pass


class QuatrainGroup(click.Group):
    """A Click group that turns any error into one line on stderr and exit 1 (2 stays for usage errors).

    ``--debug`` (or ``QUATRAIN_DEBUG=1``) shows the traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                result = super().invoke(ctx)
                sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
                return result
        except BrokenPipeError:
            _quiet_broken_pipe()
            ctx.exit(1)
        except click.ClickException as e:
            e.message = shorten(e.message, 4 * MESSAGE_LIMIT)  # type: ignore[misc]  # it may quote a user's value
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as e:
            if ctx.params.get("debug"):
                traceback.print_exc()
                ctx.exit(1)
            from quatrain import QuatrainError

            if isinstance(e, QuatrainError):
                raise click.ClickException(one_line(e)) from None
            if isinstance(e, OSError) and e.strerror:  # the environment, not a bug: a path, a disk, a permission
                where = f" ({shorten(str(e.filename), 200)})" if e.filename else ""
                raise click.ClickException(f"{e.strerror}{where}") from None
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)"
            ) from None


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")(f)


PRECISIONS = ("fp32", "tf32", "bf16")
"""``quatrain._precision.PRECISIONS``, spelled here so that building the CLI imports no torch."""


def precision_option(help: str, *aliases: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A job's precision, as every command that runs a model takes it (``quatrain._precision``): ``--precision``,
    and ``aliases`` where a command spelled it otherwise before."""
    names = ("--precision", *aliases, "precision")
    return click.option(*names, type=click.Choice(PRECISIONS), default="fp32", show_default=True, help=help)


def check_precision(precision: str, device: Any, rnn: str | None = None) -> None:
    """Refuse (a usage error naming --precision, exit 2) a precision this machine cannot run, before any work:
    ``quatrain.precision_problem``'s reason. ``device``: a torch.device or its name."""
    import torch

    from quatrain import precision_problem

    if (problem := precision_problem(precision, torch.device(device), rnn)) is not None:
        raise click.BadParameter(problem, param_hint="--precision")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """A plain left-aligned text table, columns two spaces apart, laid out by rich (which measures wide
    characters by their terminal cells, not their code points).

    Cells are text, never markup. On a terminal (stdout) the table fits its width, wrapping long cells; elsewhere,
    or with ``width=0``, no cell is wrapped. Trailing spaces are stripped.
    """
    import io
    import shutil

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if width is None:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
    grid = Table(box=None, show_header=True, header_style="", pad_edge=False)
    for name in header:
        grid.add_column(Text(str(name)), overflow="fold", no_wrap=not width)
    for row in rows:
        grid.add_row(*(Text(str(cell)) for cell in row))
    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 1 << 16, color_system=None, force_terminal=False, highlight=False)
    console.print(grid, crop=False, soft_wrap=False)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def warn(message: str) -> None:
    click.echo(message, file=sys.stderr)


DEVICE_HELP = "Where to run: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."


def device_problem(name: str) -> str | None:
    """Why ``--device name`` cannot be used on this machine, or None if it can."""
    import torch

    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return "not a device name; use auto, cpu, cuda, cuda:N or mps"
    if device.type == "cpu":
        return "the CPU has no index; use 'cpu'" if device.index not in (None, 0) else None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available here (no NVIDIA GPU or driver, or a CPU-only torch)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available here (Apple silicon macOS only)"
    return f"quatrain runs on cpu, cuda or mps, not {device.type!r}"


def check_device(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """Click callback for ``--device``: refuse, in one line, a device this machine does not have."""
    if value is None:
        return None
    problem = device_problem(value)
    if problem is not None:
        raise click.ClickException(f"--device {shorten(value, 40)}: {problem}")
    return value


def check_backend(name: str | None, device: str, precision: str = "fp32") -> None:
    """Refuse a named backend that cannot run on ``device`` (issue 12, finding 5), with its own reasons.

    'auto', 'none' and None pass (selection picks a runnable one); an unknown name fails with the
    registry's list of names.
    """
    if name in (None, "auto", "none"):
        return
    import torch

    from quatrain import BackendUnavailableError
    from quatrain.registry import detect_hardware, get_registry

    entry = get_registry().backend(name)
    target = device_problem(device) is None and device != "auto" and torch.device(device).type
    kind = target or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    reasons = list(entry.cls.unsupported_reasons(detect_hardware(), kind, dtype))
    if reasons:
        why = "; ".join(str(r) for r in reasons)
        raise BackendUnavailableError(f"backend {name!r} cannot run on {kind} here: {why}")


def prepare_output(path: Path, *, force: bool = False, others: tuple[Path, ...] = (), what: str = "--out") -> Path:
    """Check an output before any work (issue 12, findings 3, 9 and 16): create its folder, prove the folder
    is writable, and refuse to replace an existing file (``path`` or ``others``) unless ``force``.

    Raises:
        click.ClickException: the folder cannot be made or written, or a file exists and ``force`` is off.
    """
    import tempfile

    path = Path(path)
    if path.is_dir():
        raise click.ClickException(f"{what} {str(path)!r} is a folder; give a file path")
    if not force:
        existing = [p for p in (path, *others) if p.exists()]
        if existing:
            raise click.ClickException(
                f"{what} {str(path)!r}: {', '.join(repr(str(p)) for p in existing)} already exist(s); "
                "pass --force to replace them (or --resume to continue that run), or choose another path"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise click.ClickException(
            f"{what} {str(path)!r}: cannot write to {str(path.parent)!r}: {e.strerror or e}"
        ) from None
    return path


class Throttled:
    """Progress ``(done, total, label)`` passed on to ``show`` only for long work: nothing in the first
    ``after`` seconds, then at most one call every ``every`` seconds, and the last call of each label.

    Quick commands stay silent; a 200k-token reconstruction (minutes) reports as it goes.
    """

    def __init__(self, show: Callable[[int, int, str], None], after: float = 2.0, every: float = 2.0) -> None:
        import time

        self.show, self.after, self.every, self.clock = show, after, every, time.monotonic
        self.start = self.clock()
        self.last = -float("inf")
        self.shown = False

    def __call__(self, done: int, total: int, label: str) -> None:
        now = self.clock()
        if now - self.start < self.after:
            return
        if (done >= total and self.shown) or now - self.last >= self.every:
            self.last, self.shown = now, True
            self.show(done, total, label)


def stage(text: str) -> None:
    """One line on stderr saying what a command is doing now, on a terminal only (stdout stays clean)."""
    if sys.stderr.isatty():
        click.echo(text, err=True)
