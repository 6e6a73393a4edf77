"""``quatrain train --nproc N``: the same command again, as N processes of this host under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys

import click


def command_args(ctx: click.Context, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The arguments that reproduce ``ctx``'s command (and its group's options), leaving out ``drop``."""
    args: list[str] = []
    parent = ctx.parent
    if parent is not None:
        if parent.params.get("debug"):
            args.append("--debug")
        for name in parent.params.get("disabled_plugins") or ():
            args += ["--disable-plugin", name]
    args.append(ctx.info_name or "train")
    for param in ctx.command.params:
        name = param.name
        if name is None or name in drop or not isinstance(param, click.Option):
            continue
        if ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        value = ctx.params[name]
        if param.is_flag:
            if value:
                args.append(param.opts[0])
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


# torchrun itself, without the traceback and summary box its entry point prints when a rank fails (each
# rank has already printed its own one-line error): issue 12, finding 15.
_TORCHRUN = """
import logging, sys
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run
for name in ("torch.distributed.elastic", "torch.distributed.elastic.multiprocessing.api"):
    logging.getLogger(name).setLevel(logging.CRITICAL)
try:
    run(get_args_parser().parse_args(sys.argv[1:]))
except ChildFailedError:
    sys.exit(1)
"""


def relaunch(ctx: click.Context, nproc: int) -> None:
    """Run this command as ``nproc`` processes through ``python -m torch.distributed.run --standalone``.

    Raises:
        click.UsageError: already inside a torchrun job.
        click.ClickException: the job failed (torchrun has ended every rank and printed which failed).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise click.UsageError("--nproc cannot be used inside a torchrun job (it already has WORLD_SIZE set)")
    launcher = ["--standalone", f"--nproc-per-node={nproc}", "-m", "quatrain", *command_args(ctx)]
    click.echo("launching: -m torch.distributed.run " + " ".join(launcher), err=True)
    code = subprocess.call([sys.executable, "-c", _TORCHRUN, *launcher])
    if code != 0:
        raise click.ClickException(
            f"training on {nproc} processes failed (torchrun exit code {code}); each rank's error is above"
        )
