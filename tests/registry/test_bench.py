"""The benchmark engine: same inputs for every variant, timings with spread, correctness marked, not ranked."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

import quatrain
from quatrain import ModelConfig, hookimpl
from quatrain.plugins import naive
from quatrain.plugins.naive import NaiveAttention
from quatrain.registry import _bench, _measure, _probe, load_registry, run_bench, set_registry


class FastWrong(NaiveAttention):
    name = "fast-wrong"

    def parallel(self, queries, state, need_weights=False):
        context, weights = super().parallel(queries, state, need_weights)
        return context * 2.0, weights


class Serial(NaiveAttention):
    """Correct, without a parallel path."""

    name = "serial"
    capabilities = attrs.evolve(NaiveAttention.capabilities, parallel_decode=False)


class Fakes:
    @hookimpl
    def register_attention_backends(self, register):
        register(FastWrong)
        register(Serial)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(name="fakes")
def _fakes():
    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("fakes", Fakes())])
    set_registry(registry)
    return registry


@pytest.fixture(name="report", scope="module")
def _report():
    registry = load_registry(entry_points=False, plugins=[("naive", naive), ("fakes", Fakes())])
    set_registry(registry)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_bench(ModelConfig.preset("tiny"), iters=3, warmup=1, batch_size=4, registry=registry)
    finally:
        torch.set_num_threads(threads)
        set_registry(None)


def variant(report, name):
    return next(v for v in report["variants"] if v["name"] == name)


def test_quantiles():
    values = [4.0, 1.0, 3.0, 2.0]
    assert _measure.quantile(values, 0.5) == 2.5
    assert _measure.quantile(values, 0.25) == 1.75
    assert _measure.quantile([7.0], 0.75) == 7.0


def test_every_variant_runs_every_mode(report):
    assert [v["name"] for v in report["variants"]] == ["none", "fast-wrong", "naive", "serial"]
    for v in report["variants"]:
        assert set(v["modes"]) == set(_measure.MODES)
        for mode, t in v["modes"].items():
            assert t["iters"] == 3 and t["warmup_iters"] == 1
            assert 0 < t["q1_ms"] <= t["median_ms"] <= t["q3_ms"], (v["name"], mode)
            assert t["iqr_ms"] == pytest.approx(t["q3_ms"] - t["q1_ms"])
            assert t["x_baseline"] == pytest.approx(
                t["median_ms"] / variant(report, "none")["modes"][mode]["median_ms"]
            )
            assert t["x_naive"] == pytest.approx(t["median_ms"] / variant(report, "naive")["modes"][mode]["median_ms"])
            assert math.isfinite(t["peak_mem_mb"]) and t["peak_mem_mb"] >= 0
            assert not t["graphed"]


def test_decoder_path_follows_capabilities(report):
    assert variant(report, "naive")["modes"]["train-par"]["path"] == "parallel"
    assert variant(report, "serial")["modes"]["train-par"]["path"] == "sequential"
    assert variant(report, "naive")["modes"]["train-seq"]["path"] == "sequential"
    assert variant(report, "none")["modes"]["train-par"]["path"] == "parallel"


def test_wrong_backend_is_marked_and_not_ranked(report):
    wrong = variant(report, "fast-wrong")
    assert wrong["correct"] is False
    assert wrong["check"]["ratio"] > 1 and "> bound" in wrong["check"]["worst"]
    assert variant(report, "serial")["correct"] is True
    assert variant(report, "naive")["check"]["ratio"] < 1
    for mode in _measure.MODES:
        assert report["summary"][mode]["best"] in ("naive", "serial")


def test_report_records_machine_versions_date_and_setup(report):
    assert report["schema"] == "quatrain-bench/1"
    assert report["date"].endswith("+00:00")
    assert report["machine"]["hardware"]["device"] in ("cpu", "cuda", "mps")
    assert report["machine"]["fingerprint"]
    assert report["versions"]["torch"] == torch.__version__
    assert "backend:naive" in report["versions"]
    assert report["setup"]["batch_size"] == 4 and report["setup"]["seq_len"] == 12


def test_backends_share_naive_weights(fakes, tiny):
    models = _probe.build_variants(
        tiny, ["naive", "serial", "none"], device=torch.device("cpu"), dtype=torch.float32, registry=fakes
    )
    for key, value in models["naive"].state_dict().items():
        assert torch.equal(value, models["serial"].state_dict()[key]), key
    assert models["none"].decoder.attention is None


def test_a_failing_variant_is_reported_and_the_rest_still_run(fakes, tiny, monkeypatch):
    real = _bench.measure

    def measure(model, mode, *args, **kwargs):
        if model.backend == "serial" and mode == "infer":
            raise RuntimeError("boom")
        return real(model, mode, *args, **kwargs)

    monkeypatch.setattr(_bench, "measure", measure)
    report = run_bench(tiny, backends=["serial"], iters=1, warmup=1, batch_size=2, registry=fakes)
    infer = variant(report, "serial")["modes"]["infer"]
    assert infer["median_ms"] is None and infer["note"] == "error: RuntimeError: boom"
    assert variant(report, "serial")["modes"]["train-seq"]["median_ms"] > 0


def test_unavailable_backends_are_listed_with_reasons(tiny):
    registry = load_registry()  # the installed plugins: mps cannot run on a CPU-only machine
    set_registry(registry)
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    report = run_bench(tiny, backends=["mps"], iters=1, warmup=1, batch_size=2, registry=registry)
    [unavailable] = report["unavailable"]
    assert unavailable["name"] == "mps"
    assert "does not run on cpu" in unavailable["reasons"][0]
    assert [v["name"] for v in report["variants"]] == ["none", "naive"]


def test_bf16_precision_checks_and_times_under_autocast(fakes, tiny):
    """``precision='bf16'``: every variant is checked against naive under bf16 autocast (a wrong backend is still
    caught there, a correct one passes) and timed through the engine's autocast."""
    from quatrain._rnn import autocast_problem

    if (problem := autocast_problem(tiny.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    report = run_bench(
        tiny, backends=["serial", "fast-wrong"], iters=1, warmup=1, batch_size=2, registry=fakes, precision="bf16"
    )
    assert report["setup"]["precision"] == "bf16" and report["setup"]["dtype"] == "float32"
    assert variant(report, "serial")["correct"] is True
    assert variant(report, "fast-wrong")["correct"] is False
    with pytest.raises(ValueError, match="over float32 weights"):
        run_bench(tiny, backends=["serial"], dtype=torch.bfloat16, precision="bf16", registry=fakes)


def test_the_autocast_probe_runs_the_forward_in_bfloat16(fakes, tiny):
    from quatrain._rnn import autocast_problem
    from quatrain.registry._check import probe, probe_batch

    if (problem := autocast_problem(tiny.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    model = quatrain.Autoencoder(tiny, "naive")
    x, mask = probe_batch(tiny, torch.device("cpu"), torch.float32, 0)
    assert probe(model, x, mask, autocast=True)["output tf 1.0"].dtype == torch.bfloat16
    assert probe(model, x, mask)["output tf 1.0"].dtype == torch.float32


def test_rounds_time_the_variants_in_turn_and_pool_their_calls(fakes, tiny, monkeypatch):
    """rounds=3: each mode runs none, naive, serial, none, naive, serial, ...; each variant's statistics pool
    its 3 x 2 calls, its warm-up is the first round's."""
    real, order = _bench.measure, []

    def measure(model, mode, *args, **kwargs):
        order.append((mode, "none" if model.decoder.attention is None else model.backend, kwargs["memory"]))
        return real(model, mode, *args, **kwargs)

    monkeypatch.setattr(_bench, "measure", measure)
    report = run_bench(tiny, backends=["serial"], iters=2, warmup=1, rounds=3, batch_size=2, registry=fakes)
    for mode in _measure.MODES:
        assert [name for m, name, _ in order if m == mode] == ["none", "naive", "serial"] * 3
        # on CPU the peak takes one more call: the first round's
        assert [memory for m, _, memory in order if m == mode] == [True] * 3 + [False] * 6
    assert report["setup"]["rounds"] == 3 and report["setup"]["iters"] == 2
    for v in report["variants"]:
        for t in v["modes"].values():
            assert t["iters"] == 6 and len(t["samples_ms"]) == (3 if t is v["modes"]["train-epoch"] else 6)
            assert t["median_ms"] == pytest.approx(_measure.quantile(t["samples_ms"], 0.5))


def test_pooled_rounds_keep_the_first_warm_up_the_highest_measured_peak_and_a_failure():
    def timing(samples, peak, warm=5.0, graphed=True):
        return _measure.Timing(
            median_ms=_measure.quantile(samples, 0.5), q1_ms=0.0, q3_ms=0.0, iters=len(samples), warmup_ms=warm,
            warmup_iters=1, peak_mem_mb=peak, path="parallel", graphed=graphed, samples_ms=tuple(samples),
        )  # fmt: skip

    both = _measure.pooled([timing([1.0, 2.0], 10.0, warm=7.0), timing([3.0, 4.0], 30.0, graphed=False)])
    assert (both.median_ms, both.q1_ms, both.q3_ms) == (2.5, 1.75, 3.25)
    assert both.iters == 4 and both.samples_ms == (1.0, 2.0, 3.0, 4.0)
    assert both.warmup_ms == 7.0 and both.peak_mem_mb == 30.0 and not both.graphed
    unmeasured = _measure.pooled([timing([1.0], 12.0), timing([2.0], math.nan)])
    assert unmeasured.peak_mem_mb == 12.0  # a round that did not measure memory
    assert math.isnan(_measure.pooled([timing([1.0], math.nan)]).peak_mem_mb)
    broken = _measure.failed("RuntimeError: boom")
    assert _measure.pooled([timing([1.0], 1.0), broken]) is broken


def test_a_variant_that_fails_in_a_round_is_not_timed_again(fakes, tiny, monkeypatch):
    real, calls = _bench.measure, []

    def measure(model, mode, *args, **kwargs):
        if model.backend == "serial" and mode == "infer":
            calls.append(mode)
            if len(calls) == 2:
                raise RuntimeError("boom in round 2")
        return real(model, mode, *args, **kwargs)

    monkeypatch.setattr(_bench, "measure", measure)
    report = run_bench(tiny, backends=["serial"], iters=1, warmup=1, rounds=3, batch_size=2, registry=fakes)
    infer = variant(report, "serial")["modes"]["infer"]
    assert calls == ["infer", "infer"]
    assert infer["median_ms"] is None and infer["note"] == "error: RuntimeError: boom in round 2"
    assert variant(report, "naive")["modes"]["infer"]["iters"] == 3


def test_a_seed_gives_every_variant_the_same_coins_and_leaves_the_callers_generator(fakes, tiny, monkeypatch):
    """On CPU a sequential step's work follows its coins (each teacher-forced stretch is one RNN call), so the
    bench times every variant of a round on the same coins; the caller's random state is untouched."""
    import quatrain._model as model_module

    seen: list[list[bool]] = []
    real = model_module.decode_stretches

    def spy(run, step, inputs, coins, *args, **kwargs):
        seen.append(coins.tolist())
        return real(run, step, inputs, coins, *args, **kwargs)

    monkeypatch.setattr(model_module, "decode_stretches", spy)
    models = _probe.build_variants(tiny, ["none", "naive"], device=torch.device("cpu"), dtype=torch.float32,
                                   registry=fakes)  # fmt: skip
    x, mask = _probe.make_batch(tiny, 2, torch.device("cpu"), torch.float32)
    state = torch.get_rng_state()
    runs = {}
    for seed, name in ((5, "none"), (5, "naive"), (6, "naive")):
        seen.clear()
        _measure.measure(models[name], "train-seq", x, mask, iters=3, warmup=1, cuda_graph=False, seed=seed)
        runs[seed, name] = list(seen)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(runs[5, "none"]) == 4 and runs[5, "none"] == runs[5, "naive"]
    assert runs[6, "naive"] != runs[5, "naive"]


def test_the_setup_reports_the_matmul_arithmetic_the_steps_ran_not_the_process_setting(fakes, tiny):
    """An fp32 bench in a process with TF32 matmuls turned on ran IEEE matmuls (quatrain._precision): so says
    its setup; cuDNN's setting is the process's."""
    before = torch.backends.cuda.matmul.allow_tf32  # a property of torch's: monkeypatch cannot undo it
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        report = run_bench(tiny, backends=["serial"], iters=1, warmup=1, batch_size=2, registry=fakes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert report["setup"]["tf32_matmul"] is False
    assert report["setup"]["tf32_cudnn"] is torch.backends.cudnn.allow_tf32
