"""The benchmark engine: every variant in one process on the same inputs, timed per mode, checked against naive.

Variants are the no-attention baseline (``attention='none'``) and each registered backend that runs on the
device and dtype; every backend starts from naive's weights, converted to its layout, so outputs compare;
each is checked against naive by the one rule (registry/_check.py) on a probe batch, TF32 off.
Modes are a training step at teacher forcing 0.9 (sequential), one at 1.0 (parallel where the backend has
it), and autoregressive inference without gradients. Warm-up calls (compile, CUDA-graph capture) are timed
apart; the timed calls give a median and quartiles, synchronised on the device (CUDA events on GPU).
It sits on the leaves ``_probe`` (eligibility, variants, batch), ``_check`` and ``_measure`` (timing).
"""

from __future__ import annotations

import functools
import gc
import math
import platform
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import attrs
import torch
from torch import Tensor

from quatrain import ModelConfig
from quatrain._checkpoint import quatrain_version
from quatrain._compare import Comparison
from quatrain._precision import PRECISIONS, require_precision

from ._check import REFERENCE, check_against, probe_batch
from ._discovery import Registry, get_registry
from ._hardware import detect_hardware
from ._measure import MODE_TITLES, MODES, TEACHER_FORCING, Timing, failed, measure, one_line, pooled
from ._probe import BASELINE, COMPILED_BASELINE, build_variants, eligibility_reasons, make_batch, wraps_step
from ._warmups import WarmupCache

Progress = Callable[[int, int, str], None]


@attrs.frozen(kw_only=True)
class Check:
    """A variant's agreement with naive under the one rule (registry/_check.py) on the probe batch."""

    ratio: float
    """Worst err / bound over outputs (tf 1.0, 0.0) and gradients (input, every parameter); < 1 passes; NaN: raised."""
    passed: bool
    worst: str
    """The worst quantity's line (both errors and the bound), or what was raised."""

    @property
    def ok(self) -> bool:
        return self.passed

    @classmethod
    def of(cls, comparison: Comparison) -> Check:
        worst = comparison.worst
        return cls(ratio=comparison.worst_ratio, passed=comparison.passed, worst=worst.line() if worst else "nothing")


def _versions(registry: Registry) -> dict[str, str | None]:
    found: dict[str, str | None] = {"quatrain": quatrain_version(), "torch": torch.__version__}
    for name in ("numpy", "pluggy", "triton"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    for name, entry in sorted(registry.backends.items()):
        found[f"backend:{name}"] = f"{entry.distribution or entry.plugin} {entry.version or ''}".strip()
    return found


def machine_info() -> dict[str, Any]:
    hardware = detect_hardware()
    return {
        "hardware": attrs.asdict(hardware),
        "fingerprint": hardware.fingerprint(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def run_bench(
    config: ModelConfig,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    precision: str = "fp32",
    backends: Iterable[str] | None = None,
    iters: int = 10,
    warmup: int = 2,
    rounds: int = 1,
    batch_size: int = 32,
    cuda_graph: bool | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark the baseline and each backend on one batch; return the JSON-ready report.

    Args:
        config: the model (a preset's config); the batch is (batch_size, config.max_len).
        device, dtype: where and in what precision every variant runs (the whole model in ``dtype``).
        precision: the step engine's, as ``quatrain train --precision`` runs it (``quatrain._precision``): 'fp32';
            'tf32', float32 matmuls on TF32 tensor cores (CUDA); or 'bf16', the forward under bf16 autocast
            over float32 weights (the checks against naive too; 'tf32' is checked in full float32).
        backends: names to run (default: every registered backend); unavailable ones are reported with reasons.
        iters: timed calls per variant and mode (in each round).
        warmup: calls before the timed ones, timed separately (on CUDA the last one captures the graph).
        rounds: each mode times every variant in turn this many times over (``iters`` calls each time, after
            its warm-up), and pools the rounds (``_measure.pooled``): a drift in the machine's speed then falls
            on every variant alike, not on the ones timed last.
        cuda_graph: capture whole steps in CUDA graphs (default: on CUDA).
        progress: called as ``progress(done, total, label)`` before each measurement.

    Raises:
        UnknownBackendError: a name in ``backends`` is not registered.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if precision not in PRECISIONS or (precision != "fp32" and dtype != torch.float32):
        raise ValueError(f"precision must be 'fp32', or 'tf32'/'bf16' over float32 weights; got {precision!r}, {dtype}")
    require_precision(precision, torch.device(device), config.rnn)
    registry = registry or get_registry()
    hardware = detect_hardware()
    dev = torch.device(device)
    graphs = dev.type == "cuda" if cuda_graph is None else cuda_graph
    wanted = sorted(registry.backends) if backends is None else list(dict.fromkeys(backends))
    unavailable: dict[str, list[str]] = {}
    for name in wanted:
        reasons = eligibility_reasons(registry.backend(name).cls, hardware, device, dtype)
        if reasons:
            unavailable[name] = [str(r) for r in reasons]
    if REFERENCE in unavailable:
        unavailable[REFERENCE].append("it is the reference: nothing can be checked without it")
    runnable = [n for n in wanted if n not in unavailable]
    names = [BASELINE, *([REFERENCE] if REFERENCE not in runnable and REFERENCE not in unavailable else []), *runnable]
    if any(wraps_step(registry.backend(n).cls) for n in runnable):  # compiled against compiled, too
        names.insert(1, COMPILED_BASELINE)
    models = build_variants(config, names, device=dev, dtype=dtype, registry=registry, seed=seed)
    x, mask = make_batch(config, batch_size, dev, dtype, seed)
    total = len(names) * (len(MODES) * rounds + 1)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, label)
        done += 1

    checks: dict[str, Check] = {}
    if REFERENCE in models:
        reference = models[REFERENCE]
        px, pmask = probe_batch(config, dev, dtype, seed)
        for name in names:
            tick(f"check {name}")
            if name not in (BASELINE, COMPILED_BASELINE):
                target = models[name].layout

                def convert(state: Mapping[str, Tensor], target: str = target) -> dict[str, Tensor]:
                    return registry.convert_layout(state, reference.layout, target)

                try:
                    comparison = check_against(
                        reference, models[name], px, pmask, convert=convert, autocast=precision == "bf16"
                    )
                    checks[name] = Check.of(comparison)
                except Exception as e:  # someone else's code: report it in its row, keep benchmarking the rest
                    checks[name] = Check(ratio=math.nan, passed=False, worst=f"raised {one_line(e)}")
    timings: dict[str, dict[str, Timing]] = {name: {} for name in names}
    for mode in MODES:
        done_rounds: dict[str, list[Timing]] = {name: [] for name in names}
        for round_ in range(rounds):
            for name in names:
                of = f" (round {round_ + 1}/{rounds})" if rounds > 1 else ""
                tick(f"{MODE_TITLES[mode]}: {name}{of}")
                if done_rounds[name] and not math.isfinite(done_rounds[name][-1].median_ms):
                    continue  # it failed in an earlier round: reported as it failed
                # One seed per round for every variant: on CPU they meet the same coins (_measure.measure).
                timed = functools.partial(
                    measure,
                    models[name],
                    mode,
                    x,
                    mask,
                    iters=iters,
                    warmup=warmup,
                    precision=precision,
                    seed=seed + round_,
                    memory=round_ == 0,  # on CPU one more call: the first round's figure is the peak
                )
                timing = _with_eager_fallback(timed, graphs)
                done_rounds[name].append(timing)
                gc.collect()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        for name in names:
            timings[name][mode] = pooled(done_rounds[name])
    _record_warmups(hardware, timings)
    if progress is not None:
        progress(total, total, "done")
    report = _report(
        config, names, timings, checks, unavailable, registry, device, dtype, iters, warmup, batch_size, graphs
    )
    # What the steps ran at: quatrain._precision.step_precision sets it inside each step, whatever the process set
    # (cuDNN keeps the process's setting, except under tf32).
    tf32 = precision == "tf32"
    report["setup"].update(
        precision=precision, rounds=rounds, tf32_matmul=tf32, tf32_cudnn=tf32 or torch.backends.cudnn.allow_tf32
    )
    return report


def _with_eager_fallback(timed: Callable[..., Timing], graphs: bool) -> Timing:
    """One round of one variant in one mode, ``timed(cuda_graph=...)``; a failure becomes its timing (reported in
    the table, the rest keep running), and a backend that cannot live inside an outer CUDA graph is timed
    eagerly, so noted."""
    try:
        return timed(cuda_graph=graphs)
    except Exception as e:
        if not graphs:
            return failed(one_line(e))
        try:
            t = timed(cuda_graph=False)
        except Exception as again:
            return failed(one_line(again))
        return attrs.evolve(t, note=f"eager: with graphs it raised {one_line(e)}")


def _record_warmups(hardware: Any, timings: dict[str, dict[str, Timing]]) -> None:
    """Each backend's measured warm-up beyond normal steps, per job mode, for selection (registry/_warmups.py)."""
    cache = WarmupCache()
    for name, modes in timings.items():
        for kind in ("train-seq", "train-par", "infer"):  # registry/_warmups.step_kind
            t = modes.get(kind)
            if name not in (BASELINE, COMPILED_BASELINE) and t is not None and math.isfinite(t.warmup_ms - t.median_ms):
                cache.record(hardware, name, kind, max(0.0, t.warmup_ms - t.warmup_iters * t.median_ms) / 1000.0)


def _report(
    config: ModelConfig,
    names: list[str],
    timings: dict[str, dict[str, Timing]],
    checks: dict[str, Check],
    unavailable: dict[str, list[str]],
    registry: Registry,
    device: str,
    dtype: torch.dtype,
    iters: int,
    warmup: int,
    batch_size: int,
    graphs: bool,
) -> dict[str, Any]:
    variants = []
    for name in names:
        modes = {}
        for mode, t in timings[name].items():
            base = timings[BASELINE][mode].median_ms
            ref = timings[REFERENCE][mode].median_ms if REFERENCE in timings else None
            modes[mode] = {
                **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in attrs.asdict(t).items()},
                "iqr_ms": _finite(t.iqr_ms),
                "teacher_forcing": TEACHER_FORCING[mode],
                "x_baseline": _finite(t.median_ms / base),
                "x_naive": _finite(t.median_ms / ref) if ref else None,
            }
        check = checks.get(name)
        wraps = name == COMPILED_BASELINE or (name != BASELINE and wraps_step(registry.backend(name).cls))
        variants.append(
            {
                "name": name,
                "kind": "baseline"
                if name in (BASELINE, COMPILED_BASELINE)
                else ("reference" if name == REFERENCE else "backend"),
                "wraps_step": wraps,
                "correct": None if check is None else check.ok,
                "check": None
                if check is None
                else {**attrs.asdict(check), "ratio": _finite(check.ratio), "ok": check.ok},
                "modes": modes,
            }
        )
    return {
        "schema": "quatrain-bench/1",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": _versions(registry),
        "setup": {
            "config": config.to_dict(),
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "batch_size": batch_size,
            "seq_len": config.max_len,
            "iters": iters,
            "warmup": warmup,
            "cuda_graph": graphs,
            "optimizer": "AdamW lr 1e-3, weight decay 0.01, grad-norm clip 1.0",
        },
        "variants": variants,
        "unavailable": [{"name": n, "reasons": r} for n, r in unavailable.items()],
        "summary": summarise(variants),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarise(variants: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures: the fastest correct backend per mode and its ratios."""
    by_name = {v["name"]: v for v in variants}
    ranked = [v for v in variants if v["kind"] != "baseline" and v["correct"]]
    summary: dict[str, Any] = {}
    for mode in MODES:
        if not ranked or BASELINE not in by_name:
            continue
        timed = [v for v in ranked if v["modes"][mode]["median_ms"] is not None]
        if not timed or by_name[BASELINE]["modes"][mode]["median_ms"] is None:
            continue
        best = min(timed, key=lambda v: v["modes"][mode]["median_ms"])
        entry = {
            "best": best["name"],
            "median_ms": best["modes"][mode]["median_ms"],
            "x_baseline": best["modes"][mode]["x_baseline"],
        }
        naive_ms = by_name[REFERENCE]["modes"][mode]["median_ms"] if REFERENCE in by_name else None
        if naive_ms is not None:
            entry["naive_over_best"] = naive_ms / entry["median_ms"]
        summary[mode] = entry
        entry["same_way"] = _same_way(by_name, timed, mode)
    naive_seq = by_name[REFERENCE]["modes"]["train-seq"]["median_ms"] if REFERENCE in by_name else None
    if naive_seq is not None and "train-par" in summary:
        summary["naive_seq_over_best_par"] = naive_seq / summary["train-par"]["median_ms"]
    return summary


def _same_way(by_name: dict[str, Any], timed: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The best backend against the baseline that runs the same way: eager backends against the eager
    baseline, backends that wrap (compile) the whole step against the compiled baseline, where it ran."""
    found: dict[str, Any] = {}
    for way, baseline in (("eager", BASELINE), ("compiled", COMPILED_BASELINE)):
        base_ms = by_name[baseline]["modes"][mode]["median_ms"] if baseline in by_name else None
        group = [v for v in timed if v.get("wraps_step", False) == (way == "compiled")]
        if base_ms is None or not group:
            continue
        best = min(group, key=lambda v: v["modes"][mode]["median_ms"])
        ms = best["modes"][mode]["median_ms"]
        found[way] = {"best": best["name"], "median_ms": ms, "baseline": baseline, "x_baseline": ms / base_ms}
    return found
