"""What every command shares: the error policy, JSON output, and small Click types."""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

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


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
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
            e.message = shorten(e.message, 4 * MESSAGE_LIMIT)  # a message may quote a value the user gave
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
