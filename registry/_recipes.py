"""Train a model card's recipe, measure it on its held-out test poems, and store it: ``quatrain zoo train``.

Sits on the store and discovery (for the card); the training itself is core's public API
(``quatrain.train``, ``quatrain.evaluate_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from quatrain import ConfigError, TrainConfig, evaluate_checkpoint, paths_for, train

from ._choose import train_chooser
from ._discovery import get_card
from ._entries import ZooEntry
from ._store import Store

RECIPE_OVERRIDES = ("backend", "device", "epochs", "time_limit")
"""Recipe settings ``quatrain zoo train`` may override (``--backend``, ``--device``, ``--epochs``, ``--time-limit``)."""


@attrs.frozen(kw_only=True)
class CardRun:
    """What training a card gave: the stored entry (None on ranks other than 0), its test metrics, why it stopped."""

    name: str
    entry: ZooEntry | None
    metrics: dict[str, Any]
    stop_reason: str
    best_epoch: int | None
    command: str
    """The command line that reproduces the run (stored in the card's recipe)."""


def train_card(
    name: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    store: Store | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_batch: Callable[..., None] | None = None,
) -> CardRun:
    """Train card ``name``'s recipe in the store's ``runs/NAME`` folder, test it, and store it as ``name``.

    Args:
        name: a registered model card.
        overrides: recipe settings to replace (keys from ``RECIPE_OVERRIDES``).
        resume: continue the interrupted run in ``runs/NAME`` (same recipe).
        store: the zoo store; default ``Store()``.
        on_epoch: called with each epoch's log record.
        on_stage: called with a line when training stops and measuring begins.
        on_batch: passed to the trainer, for progress within an epoch.

    Raises:
        UnknownModelError: no card ``name``.
        ConfigError: an unknown override, or ``resume`` with no interrupted run.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(RECIPE_OVERRIDES))
    if unknown:
        raise ConfigError(f"cannot override {', '.join(unknown)}; only {', '.join(RECIPE_OVERRIDES)}")
    card = get_card(name)
    store = store or Store()
    recipe = {**card.recipe, **overrides}
    config = TrainConfig.from_dict({"model": card.config.to_dict(), **recipe})
    run_dir = store.root.parent / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    out, state, _ = paths_for(run_dir / "model.safetensors")
    if resume and not state.is_file():
        raise ConfigError(f"no interrupted run of {name!r} to resume ({str(state)!r} does not exist)")
    named = {k: v for k, v in overrides.items() if (k, v) != ("backend", "auto")}  # auto is the default
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in named.items()] + (["--resume"] if resume else [])
    command = " ".join(["quatrain", "zoo", "train", name, *flags])

    chooser = train_chooser(report=on_stage) if config.backend == "auto" else None  # says what it chose, once
    result = train(
        config, out, resume=state if resume else None, on_epoch=on_epoch, on_batch=on_batch, choose_backend=chooser
    )
    if result.rank != 0:  # under torchrun: rank 0 alone measures and stores
        return CardRun(name=name, entry=None, metrics={}, stop_reason=result.stop_reason,
                       best_epoch=result.best_epoch, command=command)  # fmt: skip
    if on_stage is not None:
        on_stage(f"stopped: {result.stop_reason}; best epoch {result.best_epoch}; measuring the test poems...")
    test = evaluate_checkpoint(result.checkpoint, "test", device=config.device, data=result.data)
    metrics = {
        "token_cosine": test["cosine"],
        "top1": test["word_top1"],
        "top5": test["word_top5"],
        "split": "test",
        "teacher_forcing": test["teacher_forcing"],
        "windows": test["windows"],
        "tokens": test["tokens"],
        "epoch": test["epoch"],
    }
    split = result.data.split_metadata()
    data = {k: v for k, v in split.items() if k != "split"}
    data["poems"] = {part: len(poems) for part, poems in split["split"].items()}
    entry = store.put_checkpoint(
        name,
        result.checkpoint,
        description=card.description  # a retrained shipped model must not claim to be the shipped one
        if store.shipped(name) is None
        else f"{name} retrained here ({command}); shadows the model that ships with {card.plugin or 'its plugin'}",
        metrics=metrics,
        recipe={**config.to_dict(), "command": command},
        data=data,
    )
    return CardRun(name=name, entry=entry, metrics=metrics, stop_reason=result.stop_reason,
                   best_epoch=result.best_epoch, command=command)  # fmt: skip
