"""``quatrain eval`` and ``quatrain reconstruct``: a trained checkpoint (or a zoo model) on held-out poetry."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import (
    DEVICE_HELP,
    Throttled,
    check_device,
    check_precision,
    emit_json,
    json_option,
    precision_option,
    stage,
    table,
    warn,
)
from ._progress import StepProgress

_INFER_BACKEND_HELP = (
    "Attention backend to run the checkpoint on (its weights converted exactly on load), or auto: the "
    "fastest correct one for inference here (measured, cached)."
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
@precision_option("As `train --precision`: tf32, float32 matmuls on TF32 tensor cores (NVIDIA GPUs); bf16, autocast.")
@json_option
def evaluate(
    checkpoint: str, split: str, batch_size: int, device: str, backend: str, precision: str, as_json: bool
) -> None:
    """Held-out metrics of a trained checkpoint, fully autoregressive (no teacher forcing)."""
    from quatrain import data_for_checkpoint, evaluate_checkpoint, read_info, resolve_device
    from quatrain.registry import infer_backend, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    config, target = read_info(path).config, resolve_device(device)
    check_precision(precision, target, config.rnn)  # before the data loads
    stage(f"eval: loading the corpus, embeddings and split of {str(path)!r}")
    data = data_for_checkpoint(path)
    steps = -(-len(data.windows[split]) // batch_size)
    chosen = infer_backend(config, target, backend=backend, batch_size=batch_size, steps=steps, precision=precision,
                           report=warn)  # fmt: skip
    stage(f"eval: decoding the {split} split and searching {len(data.embeddings):,} words for each token")
    result = evaluate_checkpoint(
        path, split, device=device, batch_size=batch_size, data=data, backend=chosen, precision=precision
    )
    if as_json:
        emit_json(result)
        return
    run = f"backend {result['backend']}, {precision}, epoch {result['epoch']}"
    click.echo(
        f"{result['checkpoint']} ({run}) on the {split} split: "
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
@precision_option("As `train --precision`: tf32, float32 matmuls on TF32 tensor cores (NVIDIA GPUs); bf16, autocast.")
@json_option
def reconstruct(checkpoint: str | Path, text: str | None, file: Path | None, lines: int, plot: Path | None, device: str,
                backend: str, precision: str, as_json: bool) -> None:  # fmt: skip
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
    check_precision(precision, target, info.config.rnn)  # before the data loads
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
                           need_weights=plot is not None, precision=precision, report=warn)  # fmt: skip
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
            precision=precision,
        )
    finally:
        steps.close()
    if plot is not None:
        plot_attention(result, plot)
    if as_json:
        emit_json(
            {
                "checkpoint": str(checkpoint),
                "backend": chosen,
                "precision": precision,
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
