"""Selection: eligibility -> correctness against naive -> measured job cost; named backends; the decision cache."""

from __future__ import annotations

import json
import re

import attrs
import pytest
import torch

import quatrain
from quatrain import BackendUnavailableError, Reason, UnknownBackendError, hookimpl
from quatrain.plugins import naive
from quatrain.plugins.naive import NaiveAttention
from quatrain.registry import Job, SelectionCache, _cache, _select, load_registry, select_backend, set_registry


class FastWrong(NaiveAttention):
    """Fast on paper, wrong in fact: doubles every context."""

    name = "fast-wrong"

    def step(self, query, state, need_weights=False):
        context, weights = super().step(query, state, need_weights)
        return context * 2.0, weights

    def parallel(self, queries, state, need_weights=False):
        context, weights = super().parallel(queries, state, need_weights)
        return context * 2.0, weights


class Quantum(NaiveAttention):
    name = "quantum"

    @classmethod
    def unsupported_reasons(cls, hardware, device, dtype):
        return [Reason("device", "quantum needs a quantum device", "there is none")]


class Approx(NaiveAttention):
    name = "approx"
    capabilities = attrs.evolve(NaiveAttention.capabilities, exact=False)


class SlowStart(NaiveAttention):
    """Correct, fast per step, with a costly first call (a compile)."""

    name = "slow-start"


class DeclaredSlow(NaiveAttention):
    name = "declared-slow"
    capabilities = attrs.evolve(NaiveAttention.capabilities, warmup_seconds=1000.0)


class Fakes:
    @hookimpl
    def register_attention_backends(self, register):
        for cls in (FastWrong, Quantum, Approx, SlowStart, DeclaredSlow):
            register(cls)


# step ms, warm-up s
TIMINGS = {
    "naive": (10.0, 0.0),
    "fast-wrong": (1.0, 0.0),
    "approx": (2.0, 0.0),
    "slow-start": (5.0, 3.0),
    "declared-slow": (0.5, 0.0),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(name="fakes")
def _fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))
    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("fakes", Fakes())])
    set_registry(registry)
    return registry


class Clock:
    """Fake timings; records which backends were measured."""

    def __init__(self, timings=TIMINGS):
        self.timings = timings
        self.calls: list[str] = []

    def __call__(self, name, job):
        self.calls.append(name)
        return self.timings[name]


def job(tiny, **changes):
    return Job(config=tiny, device="cpu", **changes)


def outcome(selection, name):
    return next(c for c in selection.candidates if c.name == name)


def test_fast_wrong_backend_is_rejected(fakes, tiny):
    selection = select_backend(job(tiny, steps=100), registry=fakes, timer=Clock())
    wrong = outcome(selection, "fast-wrong")
    assert wrong.status == "failed"
    assert wrong.ratio > 1 and wrong.errors
    assert re.search(r"failed correctness: \S.*: err \S+ > bound \S+ \(k=\d+ x naive \S+ \+ floor \S+\)", wrong.line())
    assert selection.backend != "fast-wrong"
    assert outcome(selection, "slow-start").ratio < 1  # checked by the same rule, and passed


def test_unavailable_backend_is_reported_with_its_reasons(fakes, tiny):
    selection = select_backend(job(tiny), registry=fakes, timer=Clock())
    quantum = outcome(selection, "quantum")
    assert quantum.status == "unavailable"
    assert quantum.line() == "quantum: unavailable: quantum needs a quantum device (there is none)"


def test_warmup_is_counted_against_the_job_length(fakes, tiny):
    short = select_backend(job(tiny, steps=100), registry=fakes, timer=Clock())
    assert short.backend == "naive"  # 1.0 s against 3.5 s
    assert outcome(short, "slow-start").status == "slower"
    assert outcome(short, "slow-start").total_s == pytest.approx(3.0 + 100 * 0.005)
    long = select_backend(job(tiny, steps=10_000), registry=fakes, timer=Clock())
    assert long.backend == "slow-start"  # 53 s against 100 s
    assert long.lines()[0].startswith("slow-start: chosen (5.0 ms/step")


def test_declared_warmup_beyond_the_best_job_cost_is_not_measured(fakes, tiny):
    clock = Clock()
    selection = select_backend(job(tiny, steps=100), registry=fakes, timer=clock)
    assert "declared-slow" not in clock.calls
    assert "declared warm-up 1000 s" in outcome(selection, "declared-slow").line()


def test_approximations_compete_only_when_allowed(fakes, tiny):
    exact = select_backend(job(tiny, steps=100), registry=fakes, timer=Clock())
    assert outcome(exact, "approx").status == "unavailable"
    assert "--allow-approx" in outcome(exact, "approx").line()
    loose = select_backend(job(tiny, steps=100, allow_approx=True), registry=fakes, timer=Clock())
    assert loose.backend == "approx"


def test_named_backend_is_checked_and_used_as_named_without_measuring(fakes, tiny):
    def never(name, job):
        raise AssertionError("a named backend is not measured")

    selection = select_backend(job(tiny), backend="slow-start", registry=fakes, timer=never)
    assert (selection.backend, selection.named) == ("slow-start", True)
    (chosen,) = selection.candidates
    assert chosen.ratio < 1 and "correct: worst err/bound" in chosen.line()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_named_wrong_backend_is_refused_with_its_errors(fakes, tiny, dtype):
    with pytest.raises(BackendUnavailableError) as refused:
        select_backend(job(tiny, dtype=dtype), backend="fast-wrong", registry=fakes)
    message = str(refused.value)
    assert message.startswith(
        f"backend 'fast-wrong' failed its correctness check against 'naive' (cpu, {dtype}, train): "
    )
    assert re.search(r": err \S+ > bound \S+ \(k=\d+ x naive", message) and "--force" in message


def test_force_uses_a_failing_named_backend_with_a_warning(fakes, tiny):
    with pytest.warns(UserWarning, match="using backend 'fast-wrong' although it failed its correctness check"):
        selection = select_backend(job(tiny), backend="fast-wrong", registry=fakes, force=True)
    assert selection.backend == "fast-wrong" and selection.named
    assert "forced: failed correctness" in selection.lines()[0]


def test_named_unavailable_backend_is_refused_with_its_reasons(fakes, tiny):
    with pytest.raises(BackendUnavailableError, match="'quantum' cannot run this job.*quantum device"):
        select_backend(job(tiny), backend="quantum", registry=fakes)


def test_named_approximation_needs_allow_approx(fakes, tiny):
    with pytest.raises(BackendUnavailableError, match="approximates"):
        select_backend(job(tiny), backend="approx", registry=fakes)
    assert select_backend(job(tiny, allow_approx=True), backend="approx", registry=fakes).backend == "approx"


def test_unknown_named_backend(fakes, tiny):
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'"):
        select_backend(job(tiny), backend="nope", registry=fakes)


def test_a_backend_that_raises_while_measured_is_reported(fakes, tiny):
    def clock(name, job):
        if name == "slow-start":
            raise RuntimeError("kaboom")
        return TIMINGS[name]

    selection = select_backend(job(tiny, steps=10_000), registry=fakes, timer=clock)
    assert outcome(selection, "slow-start").line() == "slow-start: error: RuntimeError: kaboom"
    assert selection.backend == "naive"


class TestCache:
    def test_hit_does_not_measure_again(self, fakes, tiny):
        first = select_backend(job(tiny), registry=fakes, timer=Clock())
        clock = Clock()
        again = select_backend(job(tiny), registry=fakes, timer=clock)
        assert clock.calls == []
        assert again.cached and not first.cached
        assert again.backend == first.backend
        assert again.lines() == first.lines()

    def test_another_job_misses(self, fakes, tiny):
        select_backend(job(tiny), registry=fakes, timer=Clock())
        clock = Clock()
        select_backend(job(tiny, steps=7), registry=fakes, timer=clock)
        assert clock.calls

    def test_refresh_measures_again(self, fakes, tiny):
        select_backend(job(tiny), registry=fakes, timer=Clock())
        clock = Clock()
        assert not select_backend(job(tiny), registry=fakes, timer=clock, refresh=True).cached
        assert clock.calls

    def test_version_change_invalidates(self, fakes, tiny, monkeypatch):
        select_backend(job(tiny), registry=fakes, timer=Clock())
        monkeypatch.setattr(_select, "quatrain_version", lambda: "99.0")
        clock = Clock()
        assert not select_backend(job(tiny), registry=fakes, timer=clock).cached
        assert clock.calls

    def test_plugin_change_invalidates(self, fakes, tiny):
        select_backend(job(tiny), registry=fakes, timer=Clock())
        fewer = load_registry(entry_points=False, plugins=[("naive", naive)])
        set_registry(fewer)
        assert not select_backend(job(tiny), registry=fewer, timer=Clock()).cached

    @pytest.mark.parametrize("content", ["{not json", '{"format": "other"}', "[]", "\xff\xfe"], ids=str)
    def test_corrupt_cache_is_ignored_and_rewritten(self, fakes, tiny, content):
        path = _cache.cache_path()
        path.parent.mkdir(parents=True)
        path.write_text(content, encoding="latin-1")
        with pytest.warns(UserWarning, match="selection cache"):
            selection = select_backend(job(tiny), registry=fakes, timer=Clock())
        assert not selection.cached
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["format"] == _cache.CACHE_FORMAT
        assert data["entries"][selection.key]["backend"] == selection.backend

    def test_cache_folder_from_environment(self, fakes, tmp_path):
        assert SelectionCache().path == tmp_path / "cache" / "selection.json"


def test_autoencoder_auto_uses_the_same_selection(fakes, tiny):
    """``Autoencoder(config, backend='auto')`` reads the decision the CLI's selection made (a cache hit)."""
    chosen = select_backend(_select.job_for_model(tiny), registry=fakes, timer=Clock({**TIMINGS, "naive": (0.1, 0)}))
    assert chosen.backend == "naive"
    assert quatrain.Autoencoder(tiny, backend="auto").backend == "naive"
    faster = Clock({**TIMINGS, "slow-start": (0.01, 0.0)})
    assert (
        select_backend(_select.job_for_model(tiny), registry=fakes, timer=faster, refresh=True).backend == "slow-start"
    )
    assert quatrain.Autoencoder(tiny, backend="auto").backend == "slow-start"


def test_real_measurement_on_the_job_shapes(fakes, tiny):
    """The default timer really runs the job: positive step time, finite warm-up."""
    step_ms, warmup_s = _select.measure_backend("naive", job(tiny, batch_size=2), registry=fakes)
    assert step_ms > 0 and warmup_s >= 0


def test_a_bf16_job_is_timed_as_it_runs_float32_weights_under_autocast(fakes, tiny, monkeypatch):
    """``quatrain train --precision bf16`` autocasts over float32 weights; selection times that, not a whole
    bfloat16 model."""
    from quatrain._rnn import autocast_problem

    if (problem := autocast_problem(tiny.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    seen, real = [], _select.measure

    def spy(model, mode, x, mask, **kwargs):
        seen.append((next(model.parameters()).dtype, x.dtype, kwargs["precision"], mode))
        return real(model, mode, x, mask, **kwargs)

    monkeypatch.setattr(_select, "measure", spy)
    _select.measure_backend("naive", job(tiny, dtype="bfloat16", batch_size=2, teacher_forcing=1.0), registry=fakes)
    _select.measure_backend("naive", job(tiny, batch_size=2), registry=fakes)
    assert seen == [
        (torch.float32, torch.float32, "bf16", "train-par"),
        (torch.float32, torch.float32, "fp32", "train-par"),
    ]


def test_named_backend_that_cannot_train_is_checked_on_outputs_only(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))

    class InferOnly(NaiveAttention):
        name = "infer-only"
        capabilities = attrs.evolve(NaiveAttention.capabilities, training=False)

        def _attend(self, queries, memory, key_mask):
            if torch.is_grad_enabled() and queries.requires_grad:
                raise RuntimeError("no backward here")
            return super()._attend(queries, memory, key_mask)

    class Plugin:
        @hookimpl
        def register_attention_backends(self, register):
            register(InferOnly)

    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("infer-only", Plugin())])
    set_registry(registry)
    selection = select_backend(job(tiny, mode="infer", teacher_forcing=0.0), backend="infer-only", registry=registry)
    assert selection.backend == "infer-only" and selection.candidates[0].ratio < 1
    comparison = _select.check_for_job("infer-only", job(tiny, mode="infer"), registry)
    assert {q.name for q in comparison.quantities} == {"output tf 1.0", "output tf 0.0"}


def test_a_tf32_job_is_timed_as_it_runs_and_says_so(fakes, tiny, monkeypatch):
    """``quatrain train --precision tf32``: the job is float32, timed with its matmuls on TF32 tensor cores, a
    decision of its own (the cache key differs from the float32 job's) and named so in the one line."""
    from quatrain.registry._choose import describe_selection
    from quatrain.registry._measure import Timing

    seen = []

    def spy(model, mode, x, mask, **kwargs):
        seen.append((next(model.parameters()).dtype, kwargs["precision"]))
        return Timing(
            median_ms=1.0, q1_ms=1.0, q3_ms=1.0, iters=1, warmup_ms=1.0, warmup_iters=1, peak_mem_mb=0.0,
            path="parallel", graphed=False,
        )  # fmt: skip

    monkeypatch.setattr(_select, "measure", spy)
    fast, exact = job(tiny, tf32=True, batch_size=2), job(tiny, batch_size=2)
    _select.measure_backend("naive", fast, registry=fakes)
    assert seen == [(torch.float32, "tf32")]
    hardware = quatrain.registry.detect_hardware()
    assert _select.selection_key(fast, fakes, hardware) != _select.selection_key(exact, fakes, hardware)
    selection = select_backend(fast, backend="naive", registry=fakes, timer=Clock())
    assert describe_selection(selection) == "naive: named with --backend (cpu float32 (TF32) training)"
