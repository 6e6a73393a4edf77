"""``quatrain select``: which backend a job should use, measured here, and why the others were not chosen."""

from __future__ import annotations

from pathlib import Path

import click

from ._bench import PRESETS
from ._common import check_precision, emit_json, json_option, precision_option


@click.command("select")
@click.option("--backend", default="auto", show_default=True, help="'auto', or a backend name to check and use.")
@click.option("--preset", type=click.Choice(PRESETS), default=None, help="Model size [default: seed].")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='A model config JSON (fields, or {"preset": NAME, ...overrides}).',
)
@click.option("--device", type=click.Choice(["cpu", "cuda", "mps"]), default=None, help="Default: the best one here.")
@precision_option(
    "The job's precision, as `train --precision` runs it and timed that way: bf16, float32 weights under bf16 "
    "autocast (checked against naive in bfloat16); tf32, float32 matmuls on TF32 tensor cores (CUDA). "
    "--dtype is its earlier name.",
    "--dtype",
)
@click.option("--train/--infer", "train", default=True, help="Choose for training steps (default) or for inference.")
@click.option(
    "--teacher-forcing",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="Training only: 1.0 runs the parallel decoder where a backend has one.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Length of the job in steps; warm-up (compile) cost is counted against it.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="The job's batch size.")
@click.option("--weights", "need_weights", is_flag=True, help="The job needs attention weights.")
@click.option("--allow-approx", is_flag=True, help="Let backends that approximate attention compete.")
@click.option("--refresh", is_flag=True, help="Measure again instead of using a cached decision.")
@click.option(
    "--force", is_flag=True, help="Use a named backend even if it fails its correctness check (with a warning)."
)
@json_option
def select(
    backend: str,
    preset: str | None,
    config_path: Path | None,
    device: str | None,
    precision: str,
    train: bool,
    teacher_forcing: float,
    steps: int,
    batch_size: int,
    need_weights: bool,
    allow_approx: bool,
    refresh: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Pick the fastest backend that is correct for a job, or check a named one.

    auto: eligible here (device, dtype, the job's needs) -> outputs and gradients match naive -> the
    smallest warm-up + steps x measured step time on the job's shapes. Decisions are cached per
    hardware, versions and job (QUATRAIN_CACHE overrides the cache folder). A named backend is checked
    by the same rule: one that cannot run the job, or fails the check, is refused with its reasons or
    errors (exit 1); --force uses a failing one anyway, with a warning. It is never replaced.
    """
    import warnings

    from quatrain import ModelConfig
    from quatrain.registry import Job, detect_hardware, precision_fields, select_backend

    if preset is not None and config_path is not None:
        raise click.UsageError("give --preset or --config, not both")
    if force and backend == "auto":
        raise click.UsageError("--force applies to a named backend (--backend NAME), not to 'auto'")
    config = ModelConfig.from_json(config_path) if config_path is not None else ModelConfig.preset(preset or "seed")
    device = device or detect_hardware().device
    check_precision(precision, device)
    job = Job(
        config=config,
        device=device,
        **precision_fields(precision),
        mode="train" if train else "infer",
        teacher_forcing=teacher_forcing if train else 0.0,
        steps=steps,
        batch_size=batch_size,
        need_weights=need_weights,
        allow_approx=allow_approx,
    )
    if backend == "auto":
        click.echo(f"selecting a backend for {job.device} (measuring a few steps each unless cached)...", err=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selection = select_backend(job, backend=backend, refresh=refresh, force=force)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    if as_json:
        emit_json(selection.to_dict())
        return
    forced = any(r.startswith("forced") for c in selection.candidates for r in c.reasons)
    source = "named" if selection.named else ("cached decision" if selection.cached else "measured now")
    source += ", forced past a failed correctness check" if forced else ""
    what = f"train (teacher forcing {job.teacher_forcing})" if train else "inference"
    click.echo(f"backend: {selection.backend} ({source})")
    click.echo(
        f"job: {preset or (config_path.name if config_path else 'seed')}, {job.device} {job.dtype}"
        f"{' (TF32)' if job.tf32 else ''}, {what}, "
        f"batch {job.batch_size} x {config.max_len}, {job.steps} steps"
    )
    for line in selection.lines():
        click.echo(f"  {line}")
