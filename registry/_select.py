"""Backend selection: eligible for the job -> correct against naive -> fastest on the job's own shapes; cached.

``auto`` walks every registered backend. Eligibility is the backend's own probe of this hardware plus
the job's needs (training, inference, attention weights, exactness). Eligible backends are run against
``naive`` on a small probe batch by the one comparison rule (registry/_check.py), and the correct ones are
timed for a few steps on the job's own shapes (as the job runs: autocast, TF32); the winner has the smallest
warm-up + steps x step time, so a backend with a costly compile wins only on a job long enough to pay
it back. Decisions are cached per hardware, versions and job. A backend named by the user is used as
named, or refused with its reasons or failed check (``force`` uses it anyway); it is never silently replaced.
Like the bench, it sits on the leaves ``_probe``, ``_check``, ``_measure`` and ``_cache``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs
import torch

from quatrain import BackendUnavailableError, Hardware, ModelConfig, Reason
from quatrain._checkpoint import quatrain_version
from quatrain._compare import Comparison
from quatrain._contract import DTYPE_NAMES

from ._cache import SelectionCache
from ._check import REFERENCE, check_backend_model
from ._discovery import Registry, get_registry
from ._hardware import detect_hardware
from ._measure import measure
from ._probe import build_variants, eligibility_reasons, make_batch
from ._warmups import WarmupCache, step_kind

log = logging.getLogger(__name__)

JOB_MODES = ("train", "infer")
SELECT_ITERS = 3
"""Timed steps per candidate: enough to rank backends that differ by more than noise, cheap enough for seconds."""
SELECT_WARMUP = 2
PROBE_LEN = 16

# (backend name, job) -> (step milliseconds, warm-up seconds beyond normal steps)
Timer = Callable[[str, "Job"], tuple[float, float]]


@attrs.frozen(kw_only=True)
class Job:
    """What a backend is chosen for: the model, where it runs, and how."""

    config: ModelConfig
    device: str = "cpu"
    dtype: str = attrs.field(default="float32", validator=attrs.validators.in_(tuple(DTYPE_NAMES)))
    """'bfloat16': the job autocasts over float32 weights (``--precision bf16``), and is timed that way."""
    tf32: bool = False
    """A float32 job whose matmuls run on TF32 tensor cores (``--precision tf32``, CUDA), and timed that way."""
    mode: str = attrs.field(default="train", validator=attrs.validators.in_(JOB_MODES))
    """'train' (a training step) or 'infer' (autoregressive reconstruction without gradients)."""
    teacher_forcing: float = 1.0
    """Training only: 1.0 uses the parallel decoder where a backend has one."""
    steps: int = 500
    """Length of the job in steps (default: about one epoch of the default corpus); warm-up is counted against it."""
    batch_size: int = 32
    need_weights: bool = False
    """The job reads attention weights (plots)."""
    allow_approx: bool = False
    """Let backends that are not exact (approximations) compete."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPE_NAMES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self, recurse=False), "config": self.config.to_dict()}


@attrs.frozen(kw_only=True)
class Candidate:
    """One backend's outcome in a selection."""

    name: str
    status: str
    """'chosen', 'slower', 'failed' (correctness), 'unavailable' or 'error' (raised while measured)."""
    reasons: tuple[str, ...] = ()
    step_ms: float | None = None
    warmup_s: float | None = None
    total_s: float | None = None
    """warmup_s + steps x step_ms: the job's estimated cost on this backend."""
    ratio: float | None = None
    """Worst err / bound of its correctness check under the one rule (quatrain._compare); None: not checked."""
    errors: tuple[str, ...] = ()
    """The failing quantities of that check, each with both errors and the bound."""

    def line(self, best: Candidate | None = None) -> str:
        """The one line a user reads."""
        if self.status == "chosen":
            detail = "; ".join(self.reasons)
            if self.step_ms is not None:
                detail = f"{self.step_ms:.1f} ms/step, warm-up {self.warmup_s:.1f} s, job ~{self.total_s:.1f} s"
            return f"{self.name}: chosen" + (f" ({detail})" if detail else "")
        if self.status == "slower":
            if self.step_ms is None:
                return f"{self.name}: slower: {'; '.join(self.reasons)}"
            return (
                f"{self.name}: slower: {self.step_ms:.1f} ms/step, warm-up {self.warmup_s:.1f} s, "
                f"job ~{self.total_s:.1f} s"
            )
        if self.status == "failed":
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            return f"{self.name}: failed correctness: {self.errors[0] if self.errors else 'no result'}{more}"
        return f"{self.name}: {self.status}: {'; '.join(self.reasons)}"


@attrs.frozen(kw_only=True)
class Selection:
    """The chosen backend, why, and what happened to every other candidate."""

    backend: str
    job: Job
    candidates: tuple[Candidate, ...]
    named: bool = False
    """The user named the backend (no competition)."""
    cached: bool = False
    """Read from the decision cache rather than measured now."""
    key: str = ""

    def lines(self) -> list[str]:
        return [c.line() for c in self.candidates]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "named": self.named,
            "cached": self.cached,
            "key": self.key,
            "job": self.job.to_dict(),
            "candidates": [attrs.asdict(c) for c in self.candidates],
        }


def selection_key(job: Job, registry: Registry, hardware: Hardware) -> str:
    """Hash of everything a decision depends on: hardware, torch/quatrain/plugin versions, the job."""
    plugins = {
        name: [entry.plugin, entry.distribution, entry.version, f"{entry.cls.__module__}.{entry.cls.__qualname__}"]
        for name, entry in sorted(registry.backends.items())
    }
    blob = {
        "hardware": hardware.fingerprint(),
        "torch": torch.__version__,
        "quatrain": quatrain_version(),
        "plugins": plugins,
        "job": job.to_dict(),
        "timing": "bf16 jobs under autocast; one seed",  # how measure_backend times a job: a change retires old ones
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def measure_backend(name: str, job: Job, registry: Registry | None = None) -> tuple[float, float]:
    """Time a few steps of ``job`` on ``name`` at the job's shapes: (median step ms, warm-up s beyond steps).

    A bf16 job runs as quatrain's jobs run one: float32 weights, the forward under autocast; tf32, on TF32 cores."""
    registry = registry or get_registry()
    device = torch.device(job.device)
    autocast = job.torch_dtype == torch.bfloat16
    dtype = torch.float32 if autocast else job.torch_dtype
    model = build_variants(job.config, [name], device=device, dtype=dtype, registry=registry)[name]
    x, mask = make_batch(job.config, job.batch_size, device, dtype)
    mode = "infer" if job.mode == "infer" else ("train-par" if job.teacher_forcing >= 1.0 else "train-seq")
    timing = measure(
        model,
        mode,
        x,
        mask,
        iters=SELECT_ITERS,
        warmup=SELECT_WARMUP,
        cuda_graph=device.type == "cuda",
        teacher_forcing=job.teacher_forcing,
        precision="bf16" if autocast else ("tf32" if job.tf32 else "fp32"),
        seed=0,  # on CPU every candidate meets the same coins (a sequential step's work follows them)
    )
    extra = max(0.0, timing.warmup_ms - timing.warmup_iters * timing.median_ms) / 1000.0
    return timing.median_ms, extra


def check_for_job(name: str, job: Job, registry: Registry) -> Comparison:
    """Backend ``name`` against naive by the one rule, on a probe batch of the job's model (registry/_check.py)."""
    config = job.config.evolve(max_len=min(job.config.max_len, PROBE_LEN))
    return check_backend_model(config, name, device=job.device, dtype=job.torch_dtype, registry=registry)


def _checked(name: str, comparison: Comparison) -> Candidate:
    """The candidate a failed check makes: its failing quantities, worst first."""
    failures = sorted(comparison.failures, key=lambda q: -q.ratio)
    ratio = comparison.worst_ratio
    return Candidate(
        name=name,
        status="failed",
        ratio=ratio if ratio < float("inf") else None,
        errors=tuple(q.line() for q in failures),
    )


def select_backend(
    job: Job,
    *,
    backend: str = "auto",
    registry: Registry | None = None,
    refresh: bool = False,
    cache: SelectionCache | None = None,
    timer: Timer | None = None,
    force: bool = False,
) -> Selection:
    """Choose the backend for ``job``.

    Args:
        job: the model, device, dtype, mode and length of the work.
        backend: 'auto', or a name to check and use as named.
        registry: where backends come from (default: the process-wide registry).
        refresh: ignore a cached decision and measure again (the new one is cached).
        cache: the decision cache (default: ``SelectionCache()`` at ``cache_path()``).
        timer: measures one backend on the job (default: ``measure_backend``); tests pass fake timings.
        force: use a named backend that fails its correctness check anyway (with a warning).

    Raises:
        UnknownBackendError: ``backend`` is not registered.
        BackendUnavailableError: the named backend cannot run this job (with every reason), fails its
            correctness check against naive (with its errors; unless ``force``), or no backend can.
    """
    registry = registry or get_registry()
    hardware = detect_hardware()
    dtype = job.torch_dtype
    training = job.mode == "train"

    def reasons_of(name: str) -> list[Reason]:
        return eligibility_reasons(
            registry.backend(name).cls,
            hardware,
            job.device,
            dtype,
            training=training,
            need_weights=job.need_weights,
            allow_approx=job.allow_approx,
        )

    if backend != "auto":
        reasons = reasons_of(backend)  # UnknownBackendError for an unknown name
        if reasons:
            raise BackendUnavailableError(
                f"backend {backend!r} cannot run this job ({job.device}, {job.dtype}, {job.mode}): "
                + "; ".join(str(r) for r in reasons)
            )
        return _named(backend, job, registry, force)

    cache = cache if cache is not None else SelectionCache()
    key = selection_key(job, registry, hardware)
    if not refresh and (hit := _from_cache(cache.get(key), job, key, registry, reasons_of)) is not None:
        log.info("backend %s for this job (cached decision %s)", hit.backend, key)
        return hit
    selection = _select(job, registry, reasons_of, key, timer or (lambda name, j: measure_backend(name, j, registry)))
    cache.put(
        key,
        {
            "backend": selection.backend,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "candidates": [attrs.asdict(c) for c in selection.candidates],
        },
    )
    for line in selection.lines():
        log.info("select: %s", line)
    return selection


def _named(name: str, job: Job, registry: Registry, force: bool) -> Selection:
    """A named backend, checked by the same rule as 'auto' applies: used as named, refused, or forced."""
    reasons: tuple[str, ...] = ("named", "the reference")
    ratio = 0.0
    if name != REFERENCE:
        comparison = check_for_job(name, job, registry)
        ratio = comparison.worst_ratio
        reasons = ("named", f"correct: worst err/bound {ratio:.2f} against {REFERENCE}")
        if not comparison.passed:
            failed = _checked(name, comparison)
            where = f"({job.device}, {job.dtype}, {job.mode})"
            more = len(failed.errors) - 3
            errors = "; ".join(failed.errors[:3]) + (f"; and {more} more" if more > 0 else "")
            if not force:
                raise BackendUnavailableError(
                    f"backend {name!r} failed its correctness check against {REFERENCE!r} {where}: {errors} "
                    "(--force, or force=True, uses it anyway)"
                )
            warnings.warn(f"using backend {name!r} although it failed its correctness check: {errors}", stacklevel=3)
            reasons = ("named", f"forced: failed correctness: {failed.errors[0]}")
    chosen = Candidate(name=name, status="chosen", reasons=reasons, ratio=ratio if ratio < float("inf") else None)
    return Selection(backend=name, job=job, named=True, candidates=(chosen,))


def _sound(candidate: Candidate) -> bool:
    """Whether a cached candidate has the types its report lines format (a number is a number)."""
    numbers = (candidate.step_ms, candidate.warmup_s, candidate.total_s, candidate.ratio)
    return (
        isinstance(candidate.name, str)
        and isinstance(candidate.status, str)
        and all(isinstance(r, str) for r in candidate.reasons)
        and all(n is None or (isinstance(n, (int, float)) and not isinstance(n, bool)) for n in numbers)
    )


def _from_cache(
    entry: dict[str, Any] | None, job: Job, key: str, registry: Registry, reasons_of: Callable[[str], list[Reason]]
) -> Selection | None:
    if entry is None:
        return None
    try:
        candidates = tuple(Candidate(**{**c, "reasons": tuple(c.get("reasons", ()))}) for c in entry["candidates"])
        chosen = str(entry["backend"])
    except (KeyError, TypeError):
        return None
    if not all(_sound(c) for c in candidates):  # a damaged or hand-edited entry is measured again, not fatal
        return None
    if chosen not in registry.backends or reasons_of(chosen):  # the world changed under the same key
        return None
    return Selection(backend=chosen, job=job, candidates=candidates, cached=True, key=key)


def _select(
    job: Job, registry: Registry, reasons_of: Callable[[str], list[Reason]], key: str, timer: Timer
) -> Selection:
    outcomes: dict[str, Candidate] = {}
    eligible = []
    for name in sorted(registry.backends):
        reasons = reasons_of(name)
        if reasons:
            outcomes[name] = Candidate(name=name, status="unavailable", reasons=tuple(str(r) for r in reasons))
        else:
            eligible.append(name)
    if REFERENCE not in registry.backends or REFERENCE in outcomes:
        raise BackendUnavailableError(
            f"cannot select: the reference backend {REFERENCE!r} is needed to check the others and cannot run here"
        )
    # Cheapest expected warm-up first, so a backend whose warm-up alone exceeds the best job cost is
    # skipped before anything runs it (checking `compiled` for correctness would already compile it). The
    # warm-up measured here before counts; the backend's declared figure only until then (registry/_warmups.py).
    hardware, warmups, kind = detect_hardware(), WarmupCache(), step_kind(job.mode, job.teacher_forcing)
    expected = {n: warmups.estimate(registry.backend(n).cls, hardware, kind) for n in eligible}
    candidates = sorted(eligible, key=lambda n: (n != REFERENCE, expected[n][0], n))
    measured: dict[str, Candidate] = {}
    for name in candidates:
        warm, source = expected[name]
        best = min((c.total_s for c in measured.values() if c.total_s is not None), default=None)
        if best is not None and warm >= best:
            outcomes[name] = Candidate(
                name=name,
                status="slower",
                reasons=(f"{source} warm-up {round(warm, 1):g} s alone exceeds the best job cost ({best:.1f} s)",),
            )
            continue
        ratio = 0.0
        if name != REFERENCE:
            try:
                comparison = check_for_job(name, job, registry)
            except Exception as e:  # someone else's code raised while checked: report it, select among the rest
                reason = f"check raised {type(e).__name__}: {e}"
                outcomes[name] = Candidate(name=name, status="error", reasons=(reason,))
                continue
            if not comparison.passed:
                outcomes[name] = _checked(name, comparison)
                continue
            ratio = comparison.worst_ratio
        try:
            step_ms, warmup_s = timer(name, job)
        except Exception as e:  # a backend that passed its checks but breaks at the job's shapes
            outcomes[name] = Candidate(name=name, status="error", reasons=(f"{type(e).__name__}: {e}",))
            continue
        warmups.record(hardware, name, kind, warmup_s)
        measured[name] = Candidate(
            name=name,
            status="slower",
            step_ms=step_ms,
            warmup_s=warmup_s,
            total_s=warmup_s + job.steps * step_ms / 1000.0,
            ratio=ratio,
        )
    if not measured:
        raise BackendUnavailableError(
            "no backend could be measured for this job: " + "; ".join(c.line() for c in outcomes.values())
        )
    winner = min(measured.values(), key=lambda c: (c.total_s, c.name))
    measured[winner.name] = attrs.evolve(winner, status="chosen")
    outcomes.update(measured)
    order = sorted(outcomes.values(), key=lambda c: (c.status != "chosen", c.total_s is None, c.total_s or 0.0, c.name))
    return Selection(backend=winner.name, job=job, candidates=tuple(order), key=key)


def job_for_model(config: ModelConfig) -> Job:
    """The job ``Autoencoder(config, backend='auto')`` selects for: training on the best device here, float32."""
    return Job(config=config, device=detect_hardware().device)
