"""Measured warm-ups: the declared figure counts only until this hardware has measured one; select and bench
both measure it."""

from __future__ import annotations

import attrs
import pytest

from quatrain import hookimpl
from quatrain.plugins import naive
from quatrain.plugins.naive import NaiveAttention
from quatrain.registry import Job, detect_hardware, load_registry, run_bench, select_backend, set_registry
from quatrain.registry._warmups import WarmupCache, step_kind

pytestmark = pytest.mark.usefixtures("one_thread")


class Compiles(NaiveAttention):
    """Declares a long warm-up (a cold compile on a slow CPU), and is fast per step."""

    name = "compiles"
    capabilities = attrs.evolve(NaiveAttention.capabilities, warmup_seconds=30.0)


class Plugin:
    @hookimpl
    def register_attention_backends(self, register):
        register(Compiles)


@pytest.fixture(name="fakes")
def _fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))
    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("compiles", Plugin())])
    set_registry(registry)
    return registry


class Clock:
    def __init__(self, warmup: float) -> None:
        self.warmup = warmup
        self.calls: list[str] = []

    def __call__(self, name, job):
        self.calls.append(name)
        return (10.0, 0.0) if name == "naive" else (5.0, self.warmup)


def test_the_declared_figure_counts_until_a_measurement(fakes):
    cache, hardware = WarmupCache(), detect_hardware()
    assert cache.estimate(Compiles, hardware, "train-seq") == (30.0, "declared")
    cache.record(hardware, "compiles", "train-seq", 8.5)
    assert cache.estimate(Compiles, hardware, "train-seq") == (8.5, "measured")
    assert cache.estimate(Compiles, hardware, "train-par") == (30.0, "declared"), "per kind of step"
    assert [step_kind("train", 0.9), step_kind("train", 1.0), step_kind("infer", 0.0)] == [
        "train-seq",
        "train-par",
        "infer",
    ]


def test_a_measured_warmup_lets_a_declared_slow_backend_win_a_job_long_enough(fakes, tiny):
    """The H200 case: 30 s declared, 8.5 s measured; a 2,048-step job of 10 ms steps costs 20 s on naive."""
    job = Job(config=tiny, device="cpu", steps=2048, teacher_forcing=0.9)
    clock = Clock(warmup=8.5)
    first = select_backend(job, registry=fakes, timer=clock, refresh=True)
    assert first.backend == "naive" and clock.calls == ["naive"]
    assert "declared warm-up 30 s alone exceeds" in next(c for c in first.candidates if c.name == "compiles").line()
    WarmupCache().record(detect_hardware(), "compiles", "train-seq", 8.5)  # what a bench run measured here
    second = select_backend(job, registry=fakes, timer=clock, refresh=True)
    assert second.backend == "compiles"  # 8.5 s + 2048 x 5 ms = 18.7 s against 20.5 s
    assert WarmupCache().measured(detect_hardware(), "compiles", "train-seq") == 8.5, "selection records it"


def test_selection_records_the_warmup_it_measures(fakes, tiny):
    WarmupCache().record(detect_hardware(), "compiles", "train-par", 1.0)
    select_backend(Job(config=tiny, device="cpu", steps=2048), registry=fakes, timer=Clock(warmup=2.5), refresh=True)
    assert WarmupCache().measured(detect_hardware(), "compiles", "train-par") == 2.5


def test_bench_records_the_warmups_it_measures(fakes, tiny):
    run_bench(tiny, backends=["compiles"], iters=2, warmup=2, batch_size=2)
    cache = WarmupCache()
    for mode in ("train-seq", "train-par", "infer"):
        assert cache.measured(detect_hardware(), "compiles", mode) is not None
        assert cache.measured(detect_hardware(), "naive", mode) is not None
