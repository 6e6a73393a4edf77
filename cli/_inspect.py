"""``quatrain inspect``: what a checkpoint holds, without building its model."""

from __future__ import annotations

import json
from typing import Any

import click

from ._common import emit_json, json_option


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT|ZOO_NAME")
@json_option
def inspect(checkpoint: str, as_json: bool) -> None:
    """Show a checkpoint's (or a zoo model's) metadata, config, backend, layout and parameter count."""
    from quatrain import read_info
    from quatrain.registry import resolve_checkpoint

    info = read_info(resolve_checkpoint(checkpoint))
    standard = {"format", "quatrain_version", "torch_version", "config", "backend", "layout"}
    extra: dict[str, Any] = {}
    for key, value in info.metadata.items():
        if key not in standard:
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
        "config": info.config.to_dict(),
        "metadata": extra,
    }
    if as_json:
        emit_json(report)
        return
    for key in ("path", "format", "quatrain_version", "torch_version", "backend", "layout"):
        click.echo(f"{key:<17} {report[key]}")
    click.echo(f"{'parameters':<17} {report['num_parameters']:,} in {report['num_tensors']} tensors")
    click.echo("config:")
    for key, value in report["config"].items():
        click.echo(f"  {key:<17} {value}")
    for key, value in extra.items():
        click.echo(f"{key:<17} {json.dumps(value)}")
