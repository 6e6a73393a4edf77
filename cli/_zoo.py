"""``quatrain zoo list|show|rm|path``: the named models, their cards and the local store."""

from __future__ import annotations

import json
from typing import Any

import click

from ._common import check_backend, check_device, emit_json, json_option, shorten, table, warn


def _metric(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def zoo_rows() -> list[dict[str, Any]]:
    """Every card and every stored model, with its status: store, shipped, not trained, or broken.

    Each model is checked against its weights (``ZooEntry.problems``); a broken one is listed with its
    problems and without its metrics, and a folder that is not a model at all gets a row of its own.
    """
    from quatrain.registry import Store

    store = Store()
    good, bad = store.scan()
    entries = {e.folder.name if e.origin == "store" else e.card.name: e for e in good}
    rows = []
    for name in sorted(set(entries) | set(store.cards)):
        card = store.cards.get(name)
        entry = entries.get(name)
        problems = entry.problems() if entry else []
        rows.append(
            {
                "name": name,
                "status": ("broken" if problems else entry.origin) if entry else "not trained",
                "description": entry.card.description if entry else (card.description if card else ""),
                "plugin": card.plugin if card else None,
                "num_parameters": entry.card.num_parameters if entry and not problems else None,
                "backend": entry.card.backend if entry else None,
                "metrics": entry.card.metrics if entry and not problems else {},
                "folder": str(entry.folder) if entry else None,
                "problems": problems,
            }
        )
    for folder, reason in bad:
        rows.append(
            {
                "name": folder.name,
                "status": "broken",
                "description": "",
                "plugin": None,
                "num_parameters": None,
                "backend": None,
                "metrics": {},
                "folder": str(folder),
                "problems": [reason],
            }
        )
    return rows


@click.group()
def zoo() -> None:
    """Named models: cards registered by plugins, weights in the local store or shipped with a plugin."""


@zoo.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """List every model card and stored model, with its status and held-out metrics."""
    rows = zoo_rows()
    if as_json:
        emit_json(rows)
        return
    body = [
        [
            r["name"],
            r["status"],
            f"{r['num_parameters']:,}" if r["num_parameters"] else "-",
            _metric(r["metrics"], "token_cosine"),
            _metric(r["metrics"], "top1"),
            r["description"],
        ]
        for r in rows
    ]
    click.echo(table(body, ["NAME", "STATUS", "PARAMS", "COSINE", "TOP-1", "DESCRIPTION"]))
    for r in rows:
        for problem in r["problems"]:
            click.echo(f"! {r['name']}: {shorten(problem, 300)}")


@zoo.command()
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a model's card: config, recipe, metrics, data, checksum, versions, where it lives."""
    from quatrain.registry import Store, UnknownModelError

    store = Store()
    card = store.cards.get(name)
    try:
        entry = store.entry(name)
    except UnknownModelError:
        if card is None:
            raise
        entry = None
    report: dict[str, Any] = {"name": name}
    if card is not None:
        report["card"] = card.to_dict()
    if entry is not None:
        report["stored"] = entry.to_dict()
    problems = entry.problems() if entry is not None else []
    if entry is not None:
        report["problems"] = problems
    if as_json:
        emit_json(report)
        return
    if entry is None:
        assert card is not None
        click.echo(f"{name}: {card.description}")
        click.echo(f"status      not trained (train it with 'quatrain zoo train {name}')")
        click.echo(f"from        plugin {card.plugin} ({card.distribution or 'registered directly'})")
        click.echo(f"recipe      {json.dumps(card.recipe, sort_keys=True)}")
        if card.reference:
            click.echo(f"reference   {json.dumps(card.reference, sort_keys=True)}")
        click.echo("config:")
        for key, value in card.config.to_dict().items():
            click.echo(f"  {key:<17} {value}")
        return
    stored = entry.card
    click.echo(f"{name}: {stored.description}")
    click.echo(
        f"status      {entry.origin}" + (f" (plugin {card.plugin})" if card and entry.origin == "shipped" else "")
    )
    click.echo(f"folder      {entry.folder}")
    click.echo(f"backend     {stored.backend} (layout {stored.layout})")
    click.echo(f"parameters  {stored.num_parameters:,}")
    click.echo(f"sha256      {stored.sha256}")
    click.echo(f"created     {stored.created}")
    click.echo(f"versions    {', '.join(f'{k} {v}' for k, v in stored.versions.items())}")
    for problem in problems:
        click.echo(f"PROBLEM     {shorten(problem, 300)}")
    for title, section in (("metrics", stored.metrics), ("recipe", stored.recipe), ("data", stored.data)):
        click.echo(f"{title}:")
        for key, value in section.items():
            click.echo(f"  {key:<17} {json.dumps(value, sort_keys=True)}")
    click.echo("config:")
    for key, value in stored.config.to_dict().items():
        click.echo(f"  {key:<17} {value}")


@zoo.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(name: str, yes: bool) -> None:
    """Delete a model from the local store (shipped models belong to their plugin)."""
    from quatrain import CheckpointError
    from quatrain.registry import Store

    store = Store()
    folder = store.folder(name)
    try:
        entry = store.entry(name)  # unknown names fail here, before any question
        in_store = entry.origin == "store"
    except CheckpointError:  # a broken model in the store (a bad card, a dangling link) can still be removed
        if not (folder.is_dir() or folder.is_symlink()):
            raise
        in_store = True
    if in_store and not yes:
        what = f"the link {folder} (not what it points to)" if folder.is_symlink() else str(folder)
        click.confirm(f"delete {what}?", abort=True)
    removed = store.remove(name)
    click.echo(f"removed {name} ({removed})")


@zoo.command()
@click.argument("name", required=False)
@click.option("--weights", is_flag=True, help="Print the weights file (checked against its sha256), not the folder.")
def path(name: str | None, weights: bool) -> None:
    """Print a model's folder (or, without NAME, the store's folder)."""
    from quatrain.registry import Store

    store = Store()
    if name is None:
        if weights:
            raise click.UsageError("--weights needs a NAME")
        click.echo(str(store.root))
        return
    entry = store.entry(name)
    click.echo(str(entry.verify() if weights else entry.folder))


@zoo.command(name="train")
@click.argument("name")
@click.option(
    "--device",
    default=None,
    callback=check_device,
    help="'cpu', 'cuda', 'cuda:N' or 'auto' (default: the recipe's, else auto).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs.")
@click.option(
    "--time-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the recipe's minutes."
)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="Attention backend to train on, or auto: the fastest correct one for this training job (measured, cached).",
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run of this card (same recipe).")
@click.option("--wait", is_flag=True, help="If another process is training NAME, wait for it instead of refusing.")
@click.option("--force", is_flag=True, help="Train a model that ships with a plugin, shadowing the shipped one.")
@json_option
def train_(name: str, device: str | None, epochs: int | None, time_limit: float | None, backend: str,
           resume: bool, wait: bool, force: bool, as_json: bool) -> None:  # fmt: skip
    """Train a card's recipe, measure it on its held-out test poems (fully autoregressive), and store it.

    The run's checkpoint, resumable state and log are kept in the store's runs/NAME folder; the trained
    model goes to the store as NAME, with the test metrics, the recipe and the data split in its card.
    """
    from quatrain.registry import Store, get_card, train_card

    from ._progress import TrainingProgress

    store = Store()
    card = get_card(name)  # an unknown name fails before the lock
    check_backend(backend, device or card.recipe.get("device", "auto"), card.recipe.get("precision", "fp32"))
    shipped = store.shipped(name)
    if shipped is not None and not force:
        cosine = shipped.card.metrics.get("token_cosine")
        raise click.ClickException(
            f"zoo model {name!r} ships with quatrain"
            + (f" (test token cosine {cosine:.3f})" if isinstance(cosine, (int, float)) else "")
            + "; a model trained here would shadow it in every command. Pass --force to train it anyway"
            + f" ('quatrain zoo rm {name}' brings the shipped one back)"
        )

    def progress(record: dict[str, Any]) -> None:
        warn(
            f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f}  val loss {record['val_loss']:.4f}  "
            f"val cosine {record['val_cosine']:.4f}  val top-1 {record['val_word_top1']:.4f}  "
            f"tf {record['teacher_forcing']:.2f}  {record['seconds']:.0f}s"
        )

    given = (("device", device), ("epochs", epochs), ("time_limit", time_limit))
    overrides = {k: v for k, v in given if v is not None}
    overrides["backend"] = backend  # a resumed run must name the backend it started with (auto by default)
    epochs_total = int(overrides.get("epochs", card.recipe.get("epochs", 20)))
    with store.lock(name, wait=wait, on_wait=warn), TrainingProgress(epochs_total) as bar:
        run = train_card(
            name, overrides=overrides, resume=resume, store=store, on_epoch=progress, on_batch=bar.batch, on_stage=warn
        )
    if run.entry is None:  # under torchrun: rank 0 alone measures and stores
        return
    metrics, entry = run.metrics, run.entry
    if as_json:
        emit_json(
            {
                "name": name,
                "folder": str(entry.folder),
                "stop_reason": run.stop_reason,
                "best_epoch": run.best_epoch,
                "command": run.command,
                "metrics": metrics,
            }
        )
        return
    click.echo(
        f"stored {name} in {entry.folder}: test token cosine {metrics['token_cosine']:.4f}, "
        f"word top-1 {metrics['top1']:.4f} (fully autoregressive, {metrics['tokens']} tokens)"
    )
