"""What every command shares: the error policy, JSON output, and small Click types."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click


def one_line(error: BaseException) -> str:
    """An exception as the one line a user sees."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class QuatrainGroup(click.Group):
    """A Click group that turns any error into one line on stderr and exit 1 (2 stays for usage errors).

    ``--debug`` (or ``QUATRAIN_DEBUG=1``) shows the traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
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
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)"
            ) from None


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def warn(message: str) -> None:
    click.echo(message, file=sys.stderr)
