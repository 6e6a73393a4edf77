"""The ``quatrain`` command group: options shared by every command, and the list of commands."""

from __future__ import annotations

import click

from ._backends import backends, doctor
from ._common import QuatrainGroup
from ._inspect import inspect


@click.group(cls=QuatrainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quatrain", prog_name="quatrain")
@click.option("--debug", is_flag=True, envvar="QUATRAIN_DEBUG", help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """quatrain: a poetry autoencoder with measured, interchangeable attention backends."""


for command in (backends, doctor, inspect):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="quatrain")
