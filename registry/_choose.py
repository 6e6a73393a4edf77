"""``--backend auto`` for the commands that run a model: the selection for the job they run (training for
``train`` and ``zoo train``, inference for ``eval`` and ``reconstruct``), and the one line that says what was
chosen and why."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from quatrain import ModelConfig, TrainConfig
from quatrain._recipe import TeacherForcing

from ._select import Job, Selection, select_backend

Report = Callable[[str], None]

_MODES = {"train": "training", "infer": "inference"}
_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16"}


def precision_fields(precision: str) -> dict[str, Any]:
    """The ``Job`` fields of a job run at ``precision`` ('fp32', 'tf32', 'bf16'; ``quatrain._precision``): a bf16
    job autocasts over float32 weights (dtype 'bfloat16'), a tf32 job is float32 with its matmuls on TF32."""
    return {"dtype": _DTYPES[precision], "tf32": precision == "tf32"}


def job_steps(steps: int) -> int:
    """A job's length rounded up to a power of two: an estimate, coarse enough that reruns with another
    epoch count reuse the cached decision."""
    return 2 ** max(0, math.ceil(math.log2(max(1, steps))))


def describe_selection(selection: Selection) -> str:
    """The one line a command prints: the backend, why, and whether the decision was cached.

    e.g. ``cached-decoder: fastest correct for cuda float32 inference, 6.4 ms/step; cached decision``.
    """
    job = selection.job
    kind = f"{job.device} {job.dtype}{' (TF32)' if job.tf32 else ''} {_MODES[job.mode]}"
    if selection.named:
        return f"{selection.backend}: named with --backend ({kind})"
    chosen = next(c for c in selection.candidates if c.name == selection.backend)
    others = sum(1 for c in selection.candidates if c.name != chosen.name)
    what = f"fastest correct for {kind}"
    if job.mode == "train":
        what += f" at teacher forcing {job.teacher_forcing:g}"
    if chosen.step_ms is not None:
        what += f", {chosen.step_ms:.1f} ms/step"
        if chosen.warmup_s:
            what += f" + {chosen.warmup_s:.1f} s warm-up"
    how = "cached decision" if selection.cached else f"measured now against {others} other candidate(s)"
    return f"{selection.backend}: {what}; {how}"


def choose_backend(job: Job, backend: str = "auto", report: Report | None = None) -> str:
    """The backend for ``job`` (``backend`` checked and used as named, or 'auto' selected); ``report`` gets
    the one-line explanation."""
    selection = select_backend(job, backend=backend)
    if report is not None:
        report(describe_selection(selection))
    return selection.backend


def train_chooser(report: Report | None = None) -> Callable[[TrainConfig, torch.device, int], str]:
    """What ``quatrain.train(choose_backend=...)`` calls to settle ``backend='auto'`` for its job."""

    def choose(config: TrainConfig, device: torch.device, steps: int) -> str:
        job = Job(
            config=config.model,
            device=str(device),
            **precision_fields(config.precision),
            mode="train",
            teacher_forcing=TeacherForcing.parse(config.teacher_forcing).at(1),
            steps=job_steps(steps),
            batch_size=config.batch_size,
        )
        return choose_backend(job, report=report)

    return choose


def infer_backend(
    config: ModelConfig,
    device: torch.device,
    *,
    backend: str = "auto",
    batch_size: int = 256,
    steps: int = 1,
    need_weights: bool = False,
    precision: str = "fp32",
    report: Report | None = None,
) -> str | None:
    """The backend an inference job (eval, reconstruct) runs ``config``'s model on, at ``precision`` ('fp32',
    'tf32', 'bf16'); None without attention."""
    if config.attention == "none":
        if report is not None:
            report("none: the model has no attention (no backend to choose)")
        return None
    job = Job(
        config=config,
        device=str(device),
        **precision_fields(precision),
        mode="infer",
        steps=job_steps(steps),
        batch_size=batch_size,
        need_weights=need_weights,
    )
    return choose_backend(job, backend=backend, report=report)
