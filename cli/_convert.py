"""``quatrain convert``: rewrite a checkpoint for another backend's layout, proven (registry/_convert.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit_json, json_option


@click.command()
@click.argument("source_name", metavar="SOURCE|ZOO_NAME")
@click.option("--to", "target", required=True, metavar="BACKEND", help="Backend whose layout to convert to.")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write."
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@json_option
def convert(source_name: str, target: str, output: Path, force: bool, as_json: bool) -> None:
    """Convert checkpoint SOURCE for backend BACKEND, prove the conversion, and write it to OUTPUT.

    Proof: converting back gives the original attention tensors bit for bit, and on a probe batch the
    outputs and gradients match the original model by the one comparison rule (float64 golden). The output's metadata
    records converted_from, the converter path and the source backend. Writes are atomic.
    """
    from quatrain.registry import convert_checkpoint, resolve_checkpoint

    source = resolve_checkpoint(source_name)
    if output.resolve() == source.resolve():
        raise click.ClickException(f"output {str(output)!r} is the input; write the conversion to another file")
    if output.exists() and not force:
        raise click.ClickException(f"output {str(output)!r} exists; pass --force to overwrite it")
    report = convert_checkpoint(source, target, output)
    if as_json:
        emit_json(report)
        return
    probe = report["probe"]
    click.echo(
        f"converted {source} ({report['source_backend']}, {report['source_layout']}) -> {output} "
        f"({target}, {report['target_layout']})"
    )
    click.echo(f"  converter        {report['converter']}")
    click.echo("  inverse          bit-identical")
    click.echo(
        f"  forward check    worst err/bound {probe['worst_ratio']:.2f} over {probe['quantities']} outputs and "
        f"gradients on a {len(probe['batch'])}-row probe batch vs {probe['reference_backend']} "
        f"(worst: {probe['worst']})"
    )
