"""``quatrain inspect``: what a checkpoint holds, and whether it loads, without reading its tensors."""

from __future__ import annotations

import json
from typing import Any

import click

from ._common import emit_json, json_option, shorten


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT|ZOO_NAME")
@json_option
def inspect(checkpoint: str, as_json: bool) -> None:
    """Show a checkpoint's (or a zoo model's) metadata, config, backend, layout and parameter count.

    The tensors' names, shapes and dtypes are checked against the config the way ``quatrain.load``
    checks them; a file that would not load is reported as ``does not load: REASON`` (exit 1).
    """
    from quatrain import STANDARD_KEYS, CheckpointError, check_loadable, read_info
    from quatrain.registry import resolve_checkpoint

    info = read_info(resolve_checkpoint(checkpoint))
    problem = None
    try:
        check_loadable(info)
    except CheckpointError as e:
        problem = str(e)
    extra: dict[str, Any] = {}
    for key, value in info.metadata.items():
        if key not in STANDARD_KEYS:
            try:
                extra[key] = json.loads(value)
            except json.JSONDecodeError:
                extra[key] = value
    report: dict[str, Any] = {
        "path": str(info.path),
        "format": info.metadata["format"],
        "quatrain_version": info.metadata.get("quatrain_version"),
        "torch_version": info.metadata.get("torch_version"),
        "backend": info.backend,
        "layout": info.layout,
        "num_parameters": info.num_parameters,
        "num_tensors": len(info.shapes),
        "dtypes": sorted(set(info.dtypes.values())),
        "config": info.config.to_dict(),
        "metadata": extra,
        "loads": problem is None,
        "problem": problem,
    }
    if as_json:
        emit_json(report)
    else:
        for key in ("path", "format", "quatrain_version", "torch_version", "backend", "layout"):
            click.echo(f"{key:<17} {shorten(str(report[key]))}")
        click.echo(f"{'parameters':<17} {report['num_parameters']:,} in {report['num_tensors']} tensors")
        click.echo(f"{'dtypes':<17} {', '.join(report['dtypes']) or '-'}")
        click.echo("config:")
        for key, value in report["config"].items():
            click.echo(f"  {key:<17} {value}")
        for key, value in extra.items():
            click.echo(f"{shorten(key, 40):<17} {shorten(json.dumps(value))}")
    if problem is not None:
        raise click.ClickException(f"does not load: {problem}")
