"""The benchmark engine: every variant in one process on the same inputs, timed per mode, checked against naive.

Variants are the no-attention baseline (``attention='none'``) and each registered backend that runs on the
device and dtype; every backend starts from naive's weights, converted to its layout, so outputs compare;
each is checked against naive by the one rule (registry/_check.py) on a probe batch, TF32 off.
Modes are a training step at teacher forcing 0.9 (sequential), one at 1.0 (parallel where the backend has
it), and autoregressive inference without gradients. Warm-up calls (compile, CUDA-graph capture) are timed
apart; the timed calls give a median and quartiles, synchronised on the device (CUDA events on GPU).
"""

from __future__ import annotations

import gc
import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import attrs
import torch
from torch import Tensor

from quatrain import Autoencoder, InferenceStep, ModelConfig, TrainStep
from quatrain._checkpoint import ATTENTION_PREFIX, quatrain_version
from quatrain._compare import Comparison

from ._check import check_against, probe_batch
from ._discovery import Registry, get_registry
from ._hardware import detect_hardware

BASELINE = "none"
REFERENCE = "naive"
MODES = ("train-seq", "train-par", "infer")
TEACHER_FORCING = {"train-seq": 0.9, "train-par": 1.0, "infer": 0.0}
MODE_TITLES = {"train-seq": "train tf 0.9", "train-par": "train tf 1.0", "infer": "inference"}
Progress = Callable[[int, int, str], None]


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
    """Peak memory above what was held before the mode's first call (CUDA allocator; RSS on CPU)."""
    path: str
    """'parallel' or 'sequential' decoder."""
    graphed: bool
    """Replayed from one captured CUDA graph."""
    note: str = ""

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms


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
    """Peak memory above the level at ``start()``: the CUDA allocator on GPU, the process RSS elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    @staticmethod
    def _status_kib(field: str) -> int:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:  # Linux: '5' resets the peak RSS (VmHWM) to the current RSS
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError:
            pass
        self.base = self._status_kib("VmRSS") * 1024

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        return max(0, self._status_kib("VmHWM") * 1024 - self.base) / 2**20


def make_batch(
    config: ModelConfig, batch_size: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The benchmark's inputs: random word vectors (B, T, E), T = config.max_len, lengths in [T/2, T], row 0 full."""
    generator = torch.Generator().manual_seed(seed)
    T = config.max_len
    x = torch.randn(batch_size, T, config.embed_dim, generator=generator)
    lengths = torch.randint(max(1, T // 2), T + 1, (batch_size,), generator=generator)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return x.to(device=device, dtype=dtype), mask.to(device)


def build_variants(
    config: ModelConfig,
    names: Iterable[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    registry: Registry,
    seed: int = 0,
) -> dict[str, Autoencoder]:
    """One model per name (BASELINE for the no-attention model), backends all holding naive's weights."""
    torch.manual_seed(seed)
    reference = Autoencoder(config, registry.backend(REFERENCE).cls)
    state = reference.state_dict()
    models: dict[str, Autoencoder] = {}
    for name in names:
        if name == BASELINE:
            torch.manual_seed(seed)
            model = Autoencoder(config.evolve(attention="none"))
        else:
            model = Autoencoder(config, registry.backend(name).cls)
            attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in state.items() if k.startswith(ATTENTION_PREFIX)}
            converted = registry.convert_layout(attention, reference.layout, model.layout)
            rest = {k: v for k, v in state.items() if not k.startswith(ATTENTION_PREFIX)}
            model.load_state_dict({**rest, **{ATTENTION_PREFIX + k: v for k, v in converted.items()}}, strict=True)
        model = model.to(device=device, dtype=dtype)
        for module in model.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()  # one contiguous weight buffer for cuDNN, as after any .to()
        models[name] = model
    return models


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
) -> Timing:
    """Time ``model`` in ``mode`` (see MODES) on one batch; ``warmup`` calls first, timed apart.

    ``teacher_forcing`` overrides the mode's own (train modes only).
    """
    device = x.device
    probe = MemoryProbe(device)
    probe.start()
    runner: TrainStep | InferenceStep
    if mode == "infer":
        runner = InferenceStep(model, cuda_graph=cuda_graph, warmup=max(1, warmup - 1))
    else:
        model.train()
        tf = TEACHER_FORCING[mode] if teacher_forcing is None else teacher_forcing
        runner = TrainStep(model, teacher_forcing=tf, cuda_graph=cuda_graph, warmup=max(1, warmup - 1))
    try:
        warm = time_calls(lambda: runner(x, mask), iters=warmup, device=device)
        times = time_calls(lambda: runner(x, mask), iters=iters, device=device)
        peak = probe.peak_mb()
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
    )


def _one_line(error: BaseException) -> str:
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
    backends: Iterable[str] | None = None,
    iters: int = 10,
    warmup: int = 2,
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
        backends: names to run (default: every registered backend); unavailable ones are reported with reasons.
        iters: timed calls per variant and mode.
        warmup: calls before the timed ones, timed separately (on CUDA the last one captures the graph).
        cuda_graph: capture whole steps in CUDA graphs (default: on CUDA).
        progress: called as ``progress(done, total, label)`` before each measurement.

    Raises:
        UnknownBackendError: a name in ``backends`` is not registered.
    """
    from ._select import eligibility_reasons

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
    models = build_variants(config, names, device=dev, dtype=dtype, registry=registry, seed=seed)
    x, mask = make_batch(config, batch_size, dev, dtype, seed)
    total = len(names) * (len(MODES) + 1)
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
            if name != BASELINE:
                target = models[name].layout

                def convert(state: Mapping[str, Tensor], target: str = target) -> dict[str, Tensor]:
                    return registry.convert_layout(state, reference.layout, target)

                try:
                    comparison = check_against(reference, models[name], px, pmask, convert=convert)
                    checks[name] = Check.of(comparison)
                except Exception as e:  # someone else's code: report it in its row, keep benchmarking the rest
                    checks[name] = Check(ratio=math.nan, passed=False, worst=f"raised {_one_line(e)}")
    timings: dict[str, dict[str, Timing]] = {name: {} for name in names}
    for mode in MODES:
        for name in names:
            tick(f"{MODE_TITLES[mode]}: {name}")
            try:
                timings[name][mode] = measure(
                    models[name], mode, x, mask, iters=iters, warmup=warmup, cuda_graph=graphs
                )
            except Exception as e:  # report the failure in the table, keep benchmarking the rest
                timings[name][mode] = failed(_one_line(e))
                if graphs:  # a backend that cannot live inside an outer graph may still run eagerly
                    try:
                        t = measure(models[name], mode, x, mask, iters=iters, warmup=warmup, cuda_graph=False)
                        timings[name][mode] = attrs.evolve(t, note=f"eager: with graphs it raised {_one_line(e)}")
                    except Exception as again:
                        timings[name][mode] = failed(_one_line(again))
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    if progress is not None:
        progress(total, total, "done")
    return _report(
        config, names, timings, checks, unavailable, registry, device, dtype, iters, warmup, batch_size, graphs
    )


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
        variants.append(
            {
                "name": name,
                "kind": "baseline" if name == BASELINE else ("reference" if name == REFERENCE else "backend"),
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
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
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
    naive_seq = by_name[REFERENCE]["modes"]["train-seq"]["median_ms"] if REFERENCE in by_name else None
    if naive_seq is not None and "train-par" in summary:
        summary["naive_seq_over_best_par"] = naive_seq / summary["train-par"]["median_ms"]
    return summary
