"""``quatrain convert``: rewrite a checkpoint for another backend's layout, and prove the conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ._common import emit_json, json_option

STANDARD_KEYS = {"format", "quatrain_version", "torch_version", "config", "backend", "layout"}
PROBE_LENGTHS = (12, 9, 5, 1, 0)
"""Rows of the probe batch: full, padded, a single token, and an empty row (all keys masked)."""


def prove(source_path: Path, target: str, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Load ``source_path`` converted for ``target`` and check the conversion.

    Returns the converted model and the evidence: the converter path, whether converting back gives
    the original attention tensors bit for bit, and the one comparison rule (registry/_check.py) on a
    seeded probe batch: outputs (teacher forcing 1.0 and 0.0) and gradients of the converted model
    against the model as saved, in float64 (the golden) and in its own dtype (the reference).

    Raises:
        QuatrainError: unknown backend, no conversion path, unreadable checkpoint, failed proof.
    """
    import safetensors.torch
    import torch

    import quatrain
    from quatrain import CheckpointLayoutError
    from quatrain._checkpoint import ATTENTION_PREFIX, convert_attention_tensors
    from quatrain.registry import get_registry
    from quatrain.registry._check import check_against

    registry = get_registry()
    entry = registry.backend(target)  # unknown names raise with the registered ones listed
    info = quatrain.read_info(source_path)
    source_layout, target_layout = info.layout, entry.cls.capabilities.layout
    if info.backend == "none":
        raise CheckpointLayoutError(f"{str(source_path)!r} has no attention (a 'none' model); nothing to convert")
    path = registry.layouts.path(source_layout, target_layout) if source_layout != target_layout else [source_layout]
    converter = " -> ".join(path)

    original = safetensors.torch.load_file(str(source_path))
    converted = convert_attention_tensors(original, source_layout, target_layout)
    back = convert_attention_tensors(converted, target_layout, source_layout)
    attention_keys = [k for k in original if k.startswith(ATTENTION_PREFIX)]
    identical = set(back) == set(original) and all(
        back[k].dtype == original[k].dtype and torch.equal(back[k], original[k]) for k in attention_keys
    )
    if not identical:
        raise CheckpointLayoutError(f"converting {converter} and back does not give the original tensors bit for bit")

    # The reference is the model as saved, on its own backend if installed, else on naive (any layout converts).
    reference_backend = info.backend if info.backend in registry.backends else "naive"
    reference = quatrain.load(source_path, backend=reference_backend).eval()
    model = quatrain.load(source_path, backend=target).eval()
    generator = torch.Generator().manual_seed(seed)
    T, E = max(PROBE_LENGTHS), info.config.embed_dim
    x = torch.randn(len(PROBE_LENGTHS), T, E, generator=generator)
    mask = torch.arange(T)[None, :] < torch.tensor(PROBE_LENGTHS)[:, None]

    def to_target(state: Any) -> Any:
        return registry.convert_layout(state, reference.layout, model.layout)

    # The one rule: the source model in float64 is the golden, in its own dtype the reference.
    comparison = check_against(reference, model, x, mask, convert=to_target)
    if not comparison.passed:
        raise CheckpointLayoutError(
            f"converted model differs from {str(source_path)!r}: " + "; ".join(q.line() for q in comparison.failures)
        )
    worst = comparison.worst
    evidence = {
        "converter": converter,
        "plugins": sorted({c.plugin for c in registry.layouts.converters if {c.source, c.target} <= set(path)}),
        "inverse_bit_identical": identical,
        "probe": {
            "batch": list(PROBE_LENGTHS),
            "teacher_forcing": [1.0, 0.0],
            "reference_backend": reference_backend,
            "worst_ratio": comparison.worst_ratio,
            "worst": worst.line() if worst is not None else "",
            "quantities": len(comparison.quantities),
        },
    }
    return model, evidence


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
    from quatrain.registry import resolve_checkpoint

    source = resolve_checkpoint(source_name)
    if output.resolve() == source.resolve():
        raise click.ClickException(f"output {str(output)!r} is the input; write the conversion to another file")
    if output.exists() and not force:
        raise click.ClickException(f"output {str(output)!r} exists; pass --force to overwrite it")
    import quatrain

    info = quatrain.read_info(source)
    model, evidence = prove(source, target)
    extra: dict[str, Any] = {}
    for key, value in info.metadata.items():  # keep the source's own records (training recipe, metrics...)
        if key not in STANDARD_KEYS:
            try:
                extra[key] = json.loads(value)
            except json.JSONDecodeError:
                extra[key] = value
    extra |= {
        "converted_from": str(source.resolve()),
        "converter": evidence["converter"],
        "source_backend": info.backend,
        "source_layout": info.layout,
        "conversion_check": {"inverse_bit_identical": True, **evidence["probe"]},
    }
    quatrain.save(model, output, extra=extra)
    report = {
        "input": str(source),
        "output": str(output),
        "source_backend": info.backend,
        "target_backend": target,
        "source_layout": info.layout,
        "target_layout": model.layout,
        **evidence,
    }
    if as_json:
        emit_json(report)
        return
    probe = evidence["probe"]
    click.echo(f"converted {source} ({info.backend}, {info.layout}) -> {output} ({target}, {model.layout})")
    click.echo(f"  converter        {evidence['converter']}")
    click.echo("  inverse          bit-identical")
    click.echo(
        f"  forward check    worst err/bound {probe['worst_ratio']:.2f} over {probe['quantities']} outputs and "
        f"gradients on a {len(probe['batch'])}-row probe batch vs {probe['reference_backend']} "
        f"(worst: {probe['worst']})"
    )
