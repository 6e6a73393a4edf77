"""Training: the loop around the step engine. AdamW with warm-up and per-epoch decay, gradient clipping, the
teacher-forcing schedule, held-out validation each epoch, atomic checkpoints with a resumable training state
(quatrain._trainstate), early stopping on validation loss."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from ._batches import Batcher
from ._checkpoint import save as save_checkpoint
from ._distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_from_main,
    broadcast_parameters,
    failing_fast,
    init_from_env,
    shutdown,
)
from ._errors import CheckpointError, ConfigError
from ._evaluate import SplitEvaluator
from ._model import Autoencoder
from ._precision import require_precision
from ._recipe import TeacherForcing, TrainConfig, check_resumable, paths_for, prepare_data, resolve_device
from ._trainstate import read_state, restore_optimizer, restore_rng, rng_tensors, write_log, write_state
from ._trainstep import BatchCallback, TrainStep, run_epoch
from .data import PoetryData
from .data._shards import EpochSampler

EpochCallback = Callable[[dict[str, Any]], None]
BackendChooser = Callable[[TrainConfig, torch.device, int], str]
"""(recipe, device, optimiser steps of the job) -> the backend to train on; how ``--backend auto`` is settled."""


@attrs.frozen(kw_only=True)
class TrainResult:
    """What ``train`` returns."""

    model: Autoencoder
    """The model as of the last epoch trained (the checkpoint at ``checkpoint`` holds the best one)."""
    checkpoint: Path
    """The best model by validation loss (what eval, reconstruct and the zoo read)."""
    state: Path
    """The resumable training state of the last epoch."""
    log: Path
    """JSON lines, one per epoch."""
    history: list[dict[str, Any]]
    best_epoch: int
    stop_reason: str
    """'epochs', 'early-stopping' or 'time-limit'."""
    backend: str
    data: PoetryData
    rank: int = 0
    """This process's rank in a distributed job (0 writes the files)."""
    world_size: int = 1


def _lr_factor(warmup: int, decay: float, steps_per_epoch: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * decay ** (max(0, step - warmup) / steps_per_epoch)

    return factor


def train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: str | os.PathLike[str] | None = None,
    data: PoetryData | None = None,
    on_batch: BatchCallback | None = None,
    on_epoch: EpochCallback | None = None,
    choose_backend: BackendChooser | None = None,
) -> TrainResult:
    """Train an autoencoder on ``config``'s corpus through the step engine, writing checkpoints as it goes.

    Writes, atomically: ``out`` (the best model so far by validation loss, with the recipe, the split and
    its metrics in its metadata) and ``<out stem>.state.safetensors`` (the model, optimiser and RNG states
    of the epoch written, for ``resume``), both at most every ``config.save_every`` seconds and after the
    last epoch; and ``<out stem>.log.jsonl`` (one JSON line per epoch) after every epoch.

    Args:
        config: the recipe.
        out: the checkpoint path; its folder must exist.
        resume: a checkpoint (or its state file) written by an earlier run of the same recipe; training
            continues from its last epoch exactly as if it had not stopped.
        data: data already prepared for ``config`` (else loaded); on resume it must use the saved split.
        on_batch: progress after optimiser steps: (epoch, done, total, loss or None, seq/s); the loss
            is read from the device at most a few times a second.
        on_epoch: called with each epoch's log record.
        choose_backend: settles ``config.backend == 'auto'`` for this job (rank 0 asks, every rank
            uses the answer); the CLI passes the registry's selection. Without it 'auto' resolves
            as ``Autoencoder(config, 'auto')`` does.

    Raises:
        ConfigError: a bad recipe, or a resume with a different one.
        CheckpointError: a checkpoint cannot be written (the previous one survives) or read.
        DataError: unusable corpus or embeddings.
        DistributedError: under torchrun, this rank failed or a peer did (the message names the rank).

    Under torchrun (``WORLD_SIZE`` > 1) this is one rank of a data-parallel job (quatrain._distributed):
    each rank trains on its shard of every step's batch of ``batch_size * world_size`` windows (so
    ``batch_size`` is per rank), the engine sums the gradients over ranks, validation is reduced across
    ranks, and only rank 0 writes files and calls the callbacks.
    """
    ctx = init_from_env(resolve_device(config.device))
    finished = False
    try:
        with failing_fast(ctx):
            result = _train(ctx, config, out, resume, data, on_batch, on_epoch, choose_backend)
        finished = True
        return result
    finally:
        if ctx.owns_group:
            shutdown(ctx, wait_for_peers=finished)


def _train(
    ctx: DistContext,
    config: TrainConfig,
    out: str | os.PathLike[str],
    resume: str | os.PathLike[str] | None,
    data: PoetryData | None,
    on_batch: BatchCallback | None,
    on_epoch: EpochCallback | None,
    choose_backend: BackendChooser | None,
) -> TrainResult:
    ckpt_path, state_path, log_path = paths_for(out)
    if not ckpt_path.parent.is_dir():
        raise CheckpointError(f"cannot write {str(ckpt_path)!r}: folder {str(ckpt_path.parent)!r} does not exist")
    device = ctx.device
    require_precision(config.precision, device, config.model.rnn, advice="; train in 'fp32' on this machine")
    if not ctx.is_main:
        on_batch = on_epoch = None
    schedule = TeacherForcing.parse(config.teacher_forcing)
    saved: dict[str, Any] | None = None
    tensors: dict[str, torch.Tensor] = {}
    if resume is not None:
        saved, tensors, _ = read_state(resume)
        check_resumable(TrainConfig.from_dict(saved["train"]), config, resume)
    if data is None:
        data = prepare_data(config, split=saved["data"]["split"] if saved else None)
    elif data.embeddings.dim != config.model.embed_dim:
        raise ConfigError(f"data is {data.embeddings.dim}-d but the model's embed_dim is {config.model.embed_dim}")
    data_meta = data.split_metadata()
    if saved is not None and saved["data"]["fingerprint"] != data_meta["fingerprint"]:
        raise CheckpointError(f"cannot resume from {str(resume)!r}: the corpus has changed since it was trained")
    if len(data.windows["train"]) == 0 or len(data.windows["val"]) == 0:
        raise ConfigError("the split leaves no train or no val windows; use a larger corpus or other fractions")

    windows = data.windows["train"]
    sampler = EpochSampler(len(windows), config.seed, ctx.rank, ctx.world_size)
    steps_per_epoch = sampler.steps(config.batch_size)
    backend = saved["backend"] if saved else config.backend
    if backend == "auto" and config.model.attention != "none" and (ctx.is_distributed or choose_backend):
        job_steps = steps_per_epoch * config.epochs
        chosen = choose_backend(config, device, job_steps) if choose_backend and ctx.is_main else None
        if chosen is None and ctx.is_main:
            from ._resolve import resolve_backend  # rank 0 selects; every rank builds the same backend

            chosen = resolve_backend(backend, config.model).name
        backend = broadcast_from_main(ctx, chosen)
    torch.manual_seed(config.seed)
    model = Autoencoder(config.model, backend=None if config.model.attention == "none" else backend).to(device)
    graphs = device.type == "cuda"
    step = TrainStep(
        model,
        teacher_forcing=schedule.at(1),
        lr=config.lr,
        weight_decay=config.weight_decay,
        clip=config.grad_clip,
        cuda_graph=graphs,
        precision=config.precision,
        dist=ctx,
    )
    broadcast_parameters(ctx, model)  # every rank starts from rank 0's weights
    if ctx.is_distributed:  # each rank its own dropout and coins from here
        torch.manual_seed(config.seed * 1_000_003 + 1 + ctx.rank)
    lr_at = _lr_factor(config.warmup_steps, config.lr_decay, steps_per_epoch)
    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_loss": math.inf}
    bad_epochs, start_epoch = 0, 1
    if saved is not None:
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(step.optimizer, tensors, saved["param_groups"])
        restore_rng(ctx, tensors)
        history, best = list(saved["history"]), dict(saved["best"])
        bad_epochs, start_epoch = int(saved["bad_epochs"]), int(saved["epoch"]) + 1
    # validation each epoch: the split's batches, word positions and unit vocabulary made once
    validator = SplitEvaluator(
        model, data, "val", word_sample=config.val_word_tokens, device=device, precision=config.precision, dist=ctx
    )
    table = validator.batches.table  # the embedding table, on the device once
    batcher = Batcher(windows.ids, windows.lengths, table, batch_size=config.batch_size, static=graphs)
    token_total = windows.lengths.long()

    def batches(epoch: int) -> Any:
        for rows, together in sampler.batches(epoch, config.batch_size):
            # each rank's loss carries its share of the step's tokens (the gradients are summed)
            share = int(token_total[rows].sum()) / int(token_total[together].sum()) if ctx.is_distributed else None
            yield batcher(rows, share)

    began = saved_at = time.monotonic()
    stop_reason = "epochs"
    pending: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # the best epoch, not yet written
    for epoch in range(start_epoch, config.epochs + 1):
        tf = schedule.at(epoch)
        step.set_teacher_forcing(tf)
        done = run_epoch(
            step,
            batches(epoch),
            total=steps_per_epoch,
            epoch=epoch,
            first_step=(epoch - 1) * steps_per_epoch,
            lr_at=lambda n: config.lr * lr_at(n),
            row_scale=ctx.world_size,
            rows_cap=len(windows),
            on_batch=on_batch,
        )
        loss_sum, tokens = all_reduce_sum(ctx, [done.loss_sum, done.tokens])
        tick = time.perf_counter()
        val = validator()
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(tokens, 1.0),
            "val_loss": val["loss"],
            "val_cosine": val["cosine"],
            "val_word_top1": val["word_top1"],
            "val_word_top5": val["word_top5"],
            "val_word_tokens": val["word_tokens"],
            "teacher_forcing": tf,
            "lr": config.lr * lr_at(epoch * steps_per_epoch),
            "seconds": done.seconds,
            "val_seconds": time.perf_counter() - tick,
            "seq_per_s": len(windows) / max(done.seconds, 1e-9),
            "backend": model.backend,
            "device": str(device),
            "world_size": ctx.world_size,
            "engine": step.describe(),
        }
        history.append(record)
        improved = val["loss"] < best["val_loss"]
        if improved:
            best = {"epoch": epoch, "val_loss": val["loss"]}
            bad_epochs = 0
            if ctx.is_main:  # kept on the device until written
                metrics = {k: v for k, v in record.items() if k not in ("backend", "device", "engine")}
                extra = {"train": config.to_dict(), "data": data_meta, "data_summary": data.summary, "epoch": epoch}
                weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                pending = (weights, {**extra, "metrics": metrics})
        else:
            bad_epochs += 1
        stop: str | None = None
        if config.patience and bad_epochs >= config.patience:
            stop = "early-stopping"
        elif config.time_limit is not None and time.monotonic() - began >= config.time_limit * 60:
            stop = "time-limit" if epoch < config.epochs else "epochs"
        due = stop is not None or epoch == config.epochs or time.monotonic() - saved_at >= config.save_every
        stop, due = broadcast_from_main(ctx, (stop, due))  # every rank follows rank 0's clock
        rng = rng_tensors(ctx) if due else {}  # a collective under torchrun
        if ctx.is_main:
            write_log(log_path, history)
            if due:
                if pending is not None:
                    save_checkpoint(model, ckpt_path, extra=pending[1], weights=pending[0])
                    pending = None
                meta = {
                    "train": config.to_dict(),
                    "data": data_meta,
                    "epoch": epoch,
                    "backend": model.backend,
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                }
                write_state(state_path, model, step.optimizer, rng, meta)
        if due:
            saved_at = time.monotonic()
        if on_epoch is not None:
            on_epoch(record)
        if stop is not None:
            stop_reason = stop
            break
    return TrainResult(
        model=model,
        checkpoint=ckpt_path,
        state=state_path,
        log=log_path,
        history=history,
        best_epoch=int(best["epoch"]),
        stop_reason=stop_reason,
        backend=model.backend,
        data=data,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
