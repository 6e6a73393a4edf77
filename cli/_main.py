"""The ``quatrain`` command group: options shared by every command, and the list of commands."""

from __future__ import annotations

import click

from ._backends import backends, doctor
from ._bench import bench
from ._common import QuatrainGroup
from ._convert import convert
from ._inference import evaluate, reconstruct
from ._inspect import inspect
from ._plugins import disable_plugins, plugins
from ._select import select
from ._training import train
from ._zoo import zoo


@click.group(cls=QuatrainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quatrain", prog_name="quatrain")
@click.option("--debug", is_flag=True, envvar="QUATRAIN_DEBUG", help="Show full tracebacks on errors.")
@click.option(
    "--disable-plugin",
    "disabled_plugins",
    multiple=True,
    metavar="NAME",
    help="Do not load this plugin (repeatable; adds to QUATRAIN_DISABLE_PLUGINS).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, disabled_plugins: tuple[str, ...]) -> None:
    """quatrain: a poetry autoencoder with measured, interchangeable attention backends."""
    disable_plugins(ctx, disabled_plugins)


for command in (backends, doctor, inspect, plugins, zoo, convert, bench, select, train, evaluate, reconstruct):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="quatrain")
