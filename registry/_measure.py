"""Timing one model in one mode: device-synchronised calls, warm-up apart, peak memory, median and quartiles.

A leaf (core only): select and bench both sit on it. A new mode is a ``MODES`` entry plus its branch in
``measure``; its teacher forcing and title go in ``TEACHER_FORCING`` and ``MODE_TITLES``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
import torch
from torch import Tensor
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from quatrain import Autoencoder, InferenceStep, TrainStep
from quatrain._batches import Batch
from quatrain._trainstep import repeat_epoch

MODES = ("train-seq", "train-par", "infer", "train-epoch")
"""A training step at teacher forcing 0.9 (sequential decoder), one at 1.0 (parallel where a backend has it),
autoregressive inference without gradients, and the trainer's own epoch loop at teacher forcing 1.0 (its
Batcher, learning rate per step and loss sums, as ``quatrain train`` runs them) on the same batch."""
TEACHER_FORCING = {"train-seq": 0.9, "train-par": 1.0, "infer": 0.0, "train-epoch": 1.0}
MODE_TITLES = {"train-seq": "train tf 0.9", "train-par": "train tf 1.0", "infer": "inference",
               "train-epoch": "train epoch tf 1.0"}  # fmt: skip


@attrs.frozen(kw_only=True)
class Timing:
    """One variant in one mode."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    iters: int
    warmup_ms: float
    """Total of the warm-up calls (compile, capture, first-call allocation), excluded from the median."""
    warmup_iters: int
    peak_mem_mb: float
    """MB. CUDA: the allocator's peak above what was held before the mode's first call (warm-up, capture and
    optimizer state included); CPU: the most tensor memory one more call holds at once of what it allocates
    itself (``cpu_call_peak_mb``); NaN where not measured (other devices; CPU unless ``measure(memory=True)``)."""
    path: str
    """'parallel' or 'sequential' decoder."""
    graphed: bool
    """Replayed from one captured CUDA graph."""
    note: str = ""
    samples_ms: tuple[float, ...] = ()
    """The timed calls, ms each (``train-epoch``: one mean per step for each pass of the loop)."""

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_calls(fn: Callable[[], object], *, iters: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``iters`` calls, device-synchronised (CUDA events on GPU)."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        torch.cuda.synchronize(device)
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if device.type == "mps":
            torch.mps.synchronize()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


class MemoryProbe:
    """Peak memory of a mode's calls: the CUDA allocator's peak above the level at ``start()`` on GPU; on CPU,
    the tensor memory one more call allocates at its peak (``cpu_call_peak_mb``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)

    def peak_mb(self, call: Callable[[], object] | None) -> float:
        """MB; ``call`` runs once more on CPU (None there: not measured, NaN); other devices: NaN."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.device.type == "cpu" and call is not None:
            return cpu_call_peak_mb(call)
        return math.nan


@contextlib.contextmanager
def _stderr_to_null() -> Iterator[None]:
    """File descriptor 2 to the null device: the profiler's C++ side prints its start and stop (whatever
    ``KINETO_LOG_LEVEL`` says) and the allocator a line on freeing a block from before; the call repeats one
    that already ran in full view, so what it would print was seen there."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to quiet
        yield
        return
    sys.stderr.flush()
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def cpu_call_peak_mb(call: Callable[[], object]) -> float:
    """The most CPU tensor memory ``call`` holds at once of what it allocates itself, MB.

    The profiler (``profile_memory``) records every allocation and free of PyTorch's CPU allocator, with its
    address. Replayed in the order they happened, the blocks the call allocates, less those it frees again,
    give the memory it added at each moment; frees of blocks from before the call do not count. Unlike a
    process's peak RSS this does not depend on what ran before: freed memory stays with the C allocator, so a
    step run after a larger one grows the RSS by less (the bench's CPU figures used to follow the variants'
    order). Blocks come from the profiler's event tree (``experimental_event_tree``, as
    ``torch.profiler``'s own memory timeline reads them); tests/registry/test_measure_memory.py pins it.
    """
    with _stderr_to_null(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    blocks = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            blocks.append((event.start_time_ns, event.extra_fields.ptr, event.extra_fields.alloc_size))
    live: dict[int, int] = {}
    held = peak = 0
    for _, ptr, nbytes in sorted(blocks):
        if nbytes > 0:
            live[ptr] = nbytes
            held += nbytes
            peak = max(peak, held)
        elif ptr in live:
            held -= live.pop(ptr)
    return peak / 2**20


def measure(
    model: Autoencoder,
    mode: str,
    x: Tensor,
    mask: Tensor,
    *,
    iters: int,
    warmup: int,
    cuda_graph: bool,
    teacher_forcing: float | None = None,
    precision: str = "fp32",
    seed: int | None = None,
    memory: bool = False,
) -> Timing:
    """Time ``model`` in ``mode`` (see MODES) on one batch; ``warmup`` calls first, timed apart.

    ``teacher_forcing`` overrides the mode's own (train modes only); ``precision`` is the engine's ('fp32',
    'tf32' or 'bf16', as ``quatrain train --precision`` runs it; ``quatrain._precision``). ``seed``: on CPU,
    the calls draw their random numbers (scheduled sampling's coins, dropout) from a CPU generator seeded
    with it, the caller's state restored after, so variants timed with one seed meet the same coins. On CPU
    a sequential step's work depends on them (each teacher-forced stretch is one RNN call, each other step
    runs alone); a CUDA graph's step runs every step alike, whatever its coins. ``memory``: on CPU, find the
    peak memory by one more call after the timed ones, profiled (``MemoryProbe``; else NaN); CUDA's is always
    found, at no cost.
    """
    device = x.device
    probe = MemoryProbe(device)
    probe.start()
    runner: TrainStep | InferenceStep
    if mode == "infer":
        runner = InferenceStep(model, cuda_graph=cuda_graph, warmup=max(1, warmup - 1), precision=precision)
    else:
        model.train()
        tf = TEACHER_FORCING[mode] if teacher_forcing is None else teacher_forcing
        runner = TrainStep(
            model, teacher_forcing=tf, cuda_graph=cuda_graph, warmup=max(1, warmup - 1), precision=precision
        )
    batch = Batch.of(x, mask)  # checked once, then every call runs as the jobs do: no host sync per step
    cpu_seed = seed if device.type == "cpu" else None
    with torch.random.fork_rng(devices=[], enabled=cpu_seed is not None):  # the caller's generator restored after
        if cpu_seed is not None:
            torch.default_generator.manual_seed(cpu_seed)
        try:
            if mode == "train-epoch":  # one pass of the trainer's loop: a mean per step, no per-step spread
                assert isinstance(runner, TrainStep)
                warm = [repeat_epoch(runner, x, mask, warmup).seconds * 1000.0]
                times = [repeat_epoch(runner, x, mask, iters).seconds * 1000.0 / iters]
            else:
                warm = time_calls(lambda: runner.run(batch), iters=warmup, device=device)
                times = time_calls(lambda: runner.run(batch), iters=iters, device=device)
            peak = probe.peak_mb((lambda: runner.run(batch)) if memory else None)
        finally:
            model.train()
    tf = TEACHER_FORCING[mode] if teacher_forcing is None or mode == "infer" else teacher_forcing
    parallel = tf >= 1.0 and model.decoder.can_run_parallel
    return Timing(
        median_ms=quantile(times, 0.5),
        q1_ms=quantile(times, 0.25),
        q3_ms=quantile(times, 0.75),
        iters=iters,
        warmup_ms=sum(warm),
        warmup_iters=warmup,
        peak_mem_mb=peak,
        path="parallel" if parallel else "sequential",
        graphed=runner.graphed,
        note=f"eager: {runner.fallback_reason}" if cuda_graph and runner.fallback_reason else "",
        samples_ms=tuple(times),
    )


def pooled(rounds: Sequence[Timing]) -> Timing:
    """One variant's rounds in one mode (``run_bench(rounds=...)``) as one timing: quantiles over every round's
    calls, the first round's warm-up (later rounds warm up again, not counted), the highest peak, graphed only
    if every round was. A failed round is the result: its note says why."""
    for timing in rounds:
        if not math.isfinite(timing.median_ms):
            return timing
    samples = [ms for timing in rounds for ms in timing.samples_ms]
    first = rounds[0]
    return attrs.evolve(
        first,
        median_ms=quantile(samples, 0.5),
        q1_ms=quantile(samples, 0.25),
        q3_ms=quantile(samples, 0.75),
        iters=sum(timing.iters for timing in rounds),
        peak_mem_mb=max(
            (timing.peak_mem_mb for timing in rounds if not math.isnan(timing.peak_mem_mb)), default=math.nan
        ),
        graphed=all(timing.graphed for timing in rounds),
        note=next((timing.note for timing in rounds if timing.note), ""),
        samples_ms=tuple(samples),
    )


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def failed(reason: str) -> Timing:
    """The timing of a variant that raised: NaN times, the error as its note."""
    nan = math.nan
    return Timing(
        median_ms=nan,
        q1_ms=nan,
        q3_ms=nan,
        iters=0,
        warmup_ms=nan,
        warmup_iters=0,
        peak_mem_mb=nan,
        path="-",
        graphed=False,
        note=f"error: {reason}",
    )
