"""The step engine every job runs: a training step (forward, loss, backward, gradient all-reduce, clip,
AdamW) and an inference step, each replayed from a CUDA graph where possible, and the epoch loop around it.

On a GPU the decoder's step-by-step loop is launch-bound: hundreds of small kernels per batch. Capturing
the whole step once and replaying it removes the launch cost. A graph replays fixed shapes only, so
``Batcher`` keeps shapes static: the last, partial batch of an epoch is padded with empty rows (mask all
False, so zero loss weight) and windows are padded to a few captured lengths. Nothing is read back per
step: the loss and token sums stay on the device (``TrainStep.totals``), read once per epoch. A shape
the engine has no graph for, or a step that cannot be captured, runs eagerly, announced once with the
reason. Off CUDA the same steps run eagerly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import attrs
import torch
from torch import Tensor

from ._batches import Batch, Batcher
from ._distributed import DistContext, sum_gradients
from ._graphs import Graphed
from ._graphs import GraphFallbackWarning as GraphFallbackWarning
from ._loss import reconstruction_loss
from ._model import Autoencoder
from ._precision import autocast, require_precision, step_precision

log = logging.getLogger(__name__)


class _Step:
    """What TrainStep and InferenceStep share: a body replayed from CUDA graphs where possible."""

    _runner: Graphed

    @property
    def graphed(self) -> bool:
        """Whether a captured CUDA graph exists (and replays batches of its shape)."""
        return bool(self._runner.graphs)

    @property
    def fallback_reason(self) -> str | None:
        """Why capture was asked for but is off, or None."""
        return self._runner.fallback_reason

    def describe(self) -> str:
        """One phrase for logs: how the step runs."""
        if self._runner.graphs:
            return f"CUDA graphs ({len(self._runner.graphs)} shape(s))"
        if self._runner.fallback_reason:
            return f"eager: {self._runner.fallback_reason}"
        return "eager" if not self._runner.want_graph else "eager (capture pending)"


class TrainStep(_Step):
    """One optimisation step: forward, ``reconstruction_loss``, backward, (all-reduce), clip, AdamW.

    Args:
        model: the autoencoder, on its device and dtype (switched to train mode at each step).
        teacher_forcing: passed to the forward (1.0 runs the parallel decoder where the backend has one);
            scheduled sampling draws its coins on the device, fresh at every replay.
        lr: AdamW's learning rate (``set_lr`` changes it between steps, also under replay).
        weight_decay: AdamW weight decay.
        clip: maximum gradient norm; None or 0 for no clipping.
        cuda_graph: capture the whole step after ``warmup`` eager steps per shape (CUDA only; elsewhere
            it warns once and runs eagerly).
        warmup: eager steps before a capture (real steps, counted).
        precision: 'fp32'; 'tf32', float32 matmuls on TF32 tensor cores, forward and backward (CUDA only);
            or 'bf16' autocast for the forward (the loss and AdamW stay float32). See ``quatrain._precision``.
        dist: in a data-parallel job, gradients are summed over the ranks after backward (each rank's
            loss carries its share of the step's tokens, ``Batch.weight``), inside the graph with NCCL.

    Calling it returns the batch's loss (a 0-d device tensor; reading it synchronises).
    """

    def __init__(
        self,
        model: Autoencoder,
        *,
        teacher_forcing: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        clip: float | None = 1.0,
        cuda_graph: bool = False,
        warmup: int = 3,
        precision: str = "fp32",
        dist: DistContext | None = None,
    ) -> None:
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing!r}")
        self.model, self.teacher_forcing, self.clip, self.precision = model, teacher_forcing, clip, precision
        self.base_lr = lr
        self.dist = dist if dist is not None and dist.is_distributed else None
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.device = self._params[0].device
        require_precision(precision, self.device)
        graphs = cuda_graph and self.device.type == "cuda"
        # On CUDA the learning rate lives in a device tensor (so set_lr works under replay) and AdamW keeps
        # its step counters on the device (capturable), as a graph needs.
        rate: float | Tensor = torch.tensor(lr, dtype=torch.float32, device=self.device) if graphs else lr
        self.optimizer = torch.optim.AdamW(self._params, lr=rate, weight_decay=weight_decay, capturable=graphs)
        acc = torch.float32 if self.device.type == "mps" else torch.float64
        self._loss_sum = torch.zeros((), dtype=acc, device=self.device)
        self._tokens = torch.zeros((), dtype=acc, device=self.device)
        self.output: Tensor | None = None
        """The last step's reconstruction (valid until the next step)."""
        self._runner = Graphed(self._step, cuda_graph=cuda_graph, warmup=warmup, what="train step")

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (no sync; a captured graph reads the new value)."""
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def set_teacher_forcing(self, teacher_forcing: float) -> None:
        """A new rate for the next steps; the graphs recorded with the old one are dropped."""
        if teacher_forcing != self.teacher_forcing:
            self.teacher_forcing = teacher_forcing
            self._runner.reset()

    def totals(self) -> tuple[float, float]:
        """(sum of loss x tokens, tokens) since ``reset_totals``: one read of the device."""
        pair = torch.stack([self._loss_sum, self._tokens]).tolist()
        return float(pair[0]), float(pair[1])

    def reset_totals(self) -> None:
        self._loss_sum.zero_()
        self._tokens.zero_()

    def _step(self, x: Tensor, mask: Tensor, weight: Tensor | None) -> Tensor:
        # Grads stay allocated (zeroed, not freed) when graphs are wanted: a graph owns their memory.
        self.optimizer.zero_grad(set_to_none=not self._runner.want_graph)
        with step_precision(self.precision):
            with autocast(self.device, self.precision):
                out = self.model(x, mask, teacher_forcing=self.teacher_forcing)
            self.output = out.reconstruction.detach()  # under replay: the graph's buffer, rewritten per step
            loss = reconstruction_loss(out.reconstruction.float(), x.float(), mask)
            tokens = mask.sum()
            self._loss_sum += loss.detach().to(self._loss_sum.dtype) * tokens
            self._tokens += tokens
            (loss if weight is None else loss * weight).backward()
        if self.dist is not None:
            sum_gradients(self.dist, self._params)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.clip)
        self.optimizer.step()
        return loss.detach()

    def run(self, batch: Batch) -> Tensor:
        """One step on a batch the engine made (no mask check, no host sync)."""
        if not self.model.training:
            self.model.train()
        return self._runner(batch.x, batch.mask, batch.weight)

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.run(Batch.of(x, mask))


class InferenceStep(_Step):
    """Autoregressive reconstruction without gradients (teacher forcing 0), from CUDA graphs where possible.

    Args:
        model: the autoencoder, on its device and dtype; it is switched to eval mode.
        cuda_graph: capture the forward after ``warmup`` eager calls per shape (CUDA only).
        warmup: eager calls before a capture.
        precision: 'fp32', 'tf32' (CUDA only) or 'bf16' autocast, as ``TrainStep``'s.

    Calling it returns the reconstruction (B, T, E).
    """

    def __init__(
        self, model: Autoencoder, *, cuda_graph: bool = False, warmup: int = 2, precision: str = "fp32"
    ) -> None:
        self.model = model.eval()
        self.precision = precision
        self.device = next(model.parameters()).device
        require_precision(precision, self.device)
        self._runner = Graphed(self._forward, cuda_graph=cuda_graph, warmup=warmup, what="inference step")

    def _forward(self, x: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad(), step_precision(self.precision), autocast(self.device, self.precision):
            return self.model(x, mask, teacher_forcing=0.0).reconstruction.float()

    def prepare(self, batch: Batch) -> bool:
        """Warm up and capture the graph of this batch's shape now (results discarded), so that every call
        after it replays; False when there was nothing to do (off CUDA, or captured already)."""
        calls = 0
        while calls <= self._runner.warmup and self._runner.pending(batch.x, batch.mask):
            self.run(batch)
            calls += 1
        return calls > 0

    def run(self, batch: Batch) -> Tensor:
        """The reconstruction of a batch the engine made (no mask check, no host sync)."""
        if self.model.training:
            self.model.eval()
        return self._runner(batch.x, batch.mask)

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.run(Batch.of(x, mask))


# ---------------------------------------------------------------------------------------------- the epoch

BatchCallback = Callable[[int, int, int, "float | None", float], None]
"""(epoch, steps done, steps in the epoch, running mean loss or None when not read, sequences per second)."""
REPORT_EVERY_S = 0.5
"""Progress reads the device's loss sums at most this often."""


@attrs.frozen(kw_only=True)
class EpochTotals:
    """What one pass of ``run_epoch`` did; figures over real rows and tokens (pads excluded)."""

    steps: int
    rows: int
    loss_sum: float
    tokens: float
    seconds: float
    """Wall time, the device synchronised at the end."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run_epoch(
    step: TrainStep,
    batches: Iterable[Batch],
    *,
    total: int,
    epoch: int = 1,
    lr_at: Callable[[int], float] | None = None,
    first_step: int = 0,
    row_scale: int = 1,
    rows_cap: int | None = None,
    on_batch: BatchCallback | None = None,
) -> EpochTotals:
    """Train on ``batches``: the loop ``quatrain train`` and ``quatrain bench``'s train-epoch row both run.

    Args:
        step: the engine.
        batches: the epoch's batches (made lazily, so the host builds the next while the device runs).
        total: steps in the epoch (for progress).
        epoch: its number (for progress).
        lr_at: learning rate of optimiser step ``n`` (counted over the whole run), set before each step.
        first_step: the run's step count before this epoch.
        row_scale: rows per step across all ranks per row of this one (progress counts the whole job).
        rows_cap: the epoch's real rows (progress never counts more).
        on_batch: progress; the loss is read from the device at most every REPORT_EVERY_S (else None).
    """
    step.reset_totals()
    tick = last = time.perf_counter()
    steps = rows = 0
    for batch in batches:
        if lr_at is not None:
            step.set_lr(lr_at(first_step + steps))
        step.run(batch)
        steps += 1
        rows += batch.rows
        if on_batch is not None:
            now = time.perf_counter()
            loss = None
            if now - last >= REPORT_EVERY_S or steps == total:
                loss_sum, tokens = step.totals()
                loss, last = loss_sum / max(tokens, 1.0), now
            done = rows * row_scale if rows_cap is None else min(rows * row_scale, rows_cap)
            on_batch(epoch, steps, total, loss, done / max(now - tick, 1e-9))
    synchronize(step.device)
    seconds = time.perf_counter() - tick
    loss_sum, tokens = step.totals()
    return EpochTotals(steps=steps, rows=rows, loss_sum=loss_sum, tokens=tokens, seconds=seconds)


def repeat_epoch(step: TrainStep, x: Tensor, mask: Tensor, steps: int) -> EpochTotals:
    """``run_epoch`` over ``steps`` copies of one batch, cut by the trainer's own ``Batcher`` from windows that
    hold it (ids into a table of its vectors) and with the learning rate set before every step, as in
    ``quatrain train``: what ``quatrain bench``'s train-epoch row times."""
    B, T, E = x.shape
    table = x.detach().reshape(B * T, E)
    ids = torch.arange(B * T).view(B, T)
    batcher = Batcher(ids, mask.sum(dim=1).cpu(), table, batch_size=B, static=step.device.type == "cuda")
    rows = torch.arange(B)
    return run_epoch(step, (batcher(rows) for _ in range(steps)), total=steps, lr_at=lambda n: step.base_lr)
