"""The bench's CPU memory figure: what a call allocates at its peak, exact, and whatever ran before it."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import quatrain
from quatrain.registry import _measure, _probe

MiB = 2**20
pytestmark = pytest.mark.usefixtures("one_thread")


def floats(mib: float) -> torch.Tensor:
    return torch.empty(int(mib * MiB) // 4)


def test_the_peak_is_the_most_the_call_holds_at_once():
    def call():
        eight, four = floats(8), floats(4)
        del eight
        two = floats(2)
        return four, two

    assert _measure.cpu_call_peak_mb(call) == pytest.approx(12.0, abs=0.05)


def test_freeing_what_was_there_before_the_call_does_not_lower_it():
    """A block an earlier profiled call allocated, freed in this one, is not this call's: the figure stays what
    this call allocates (a running sum of every free would give 0 here)."""
    kept = [floats(16)]
    _measure.cpu_call_peak_mb(lambda: kept.append(floats(16)))
    assert _measure.cpu_call_peak_mb(lambda: (kept.clear(), floats(4))) == pytest.approx(4.0, abs=0.05)


def test_a_variants_figure_does_not_depend_on_what_the_bench_ran_before_it(tiny):
    x, mask = _probe.make_batch(tiny, 4, torch.device("cpu"), torch.float32)
    models = {}
    for name in ("none", "naive"):
        torch.manual_seed(0)
        none = name == "none"
        models[name] = quatrain.Autoencoder(tiny.evolve(attention="none") if none else tiny, None if none else name)

    def peaks(order):
        return {
            (name, mode): _measure.measure(
                models[name], mode, x, mask, iters=1, warmup=1, cuda_graph=False, seed=0, memory=True
            ).peak_mem_mb
            for name in order
            for mode in ("train-seq", "infer")
        }

    first, second = peaks(["naive", "none"]), peaks(["none", "naive"])
    assert first == second
    assert all(peak > 0 for peak in first.values())
    assert first["naive", "train-seq"] > first["none", "train-seq"]  # attention's activations and gradients


def test_without_memory_the_cpu_figure_is_not_measured(tiny):
    x, mask = _probe.make_batch(tiny, 2, torch.device("cpu"), torch.float32)
    model = quatrain.Autoencoder(tiny, "naive")
    timing = _measure.measure(model, "infer", x, mask, iters=1, warmup=1, cuda_graph=False)
    assert math.isnan(timing.peak_mem_mb)


def test_the_profiled_call_leaves_stderr_to_the_progress_lines(capfd):
    """The profiler's C++ side prints its start and stop on descriptor 2 (torch 2.13: 'profiler_start'), between
    the bench's progress lines; the call runs with it on the null device, restored after."""
    print("progress before", file=sys.stderr)
    _measure.cpu_call_peak_mb(lambda: floats(1))
    print("progress after", file=sys.stderr)
    err = capfd.readouterr().err
    assert "profiler_" not in err and "unknown size" not in err
    assert err.splitlines() == ["progress before", "progress after"]
