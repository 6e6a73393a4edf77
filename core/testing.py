"""The conformance kit: run any attention backend against ``naive`` and get a readable verdict.

``check_backend(cls)`` builds its matrix from the backend's declared capabilities (devices present here,
dtypes, training, parallel decode, weights) and judges each cell by the one comparison rule
(``quatrain._compare``): a float64 golden from the reference (``naive``), the reference in the test
dtype, and the backend in the test dtype, all from the same weights (converted to the backend's layout)
and the same rounded inputs; every output and gradient must satisfy
``err(backend) <= k * err(naive in dtype) + floor``. The cells:

- the attention module alone, ``step`` (three steps sharing one ``prepare``) and ``parallel``: outputs,
  attention weights (when declared), gradients of every parameter (naive's converted to the layout)
  and of the queries and memory, on random inputs with random key masks, including a row with every
  key masked (must give zeros, never NaN) and a row with one key;
- the whole ``Autoencoder`` for each RNN kind: sequential decode at teacher forcing 0.5 (same coins
  for all three runs) and the parallel decode at 1.0, dropout 0, lengths 0..T;
- bit-identical repeats when the backend declares ``deterministic``.

float32 cells run with TF32 off. No bar is fixed per dtype: the reference's own error in that dtype, on
this machine's kernels, sets it (benchmarks/conformance-margins.md shows the margins on two ISAs).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import attrs
import torch
from torch import Tensor

from ._compare import Comparison, Quantity, full_precision
from ._config import RNN_KINDS
from ._contract import DTYPE_NAMES, AttentionBackend, Hardware, Reason, dtype_name
from ._errors import QuatrainError
from ._kit import Kit
from ._resolve import convert_layout, lookup_backend
from ._resolve import hardware as probe_hardware

__all__ = ["CheckResult", "ConformanceReport", "assert_conforms", "check_backend"]


def _lookup_backend(name: str, registry: Any = None) -> type[AttentionBackend]:
    """A backend class by name: from ``registry`` when one is given, else core's backend table."""
    cls: type[AttentionBackend] = registry.backend(name).cls if registry is not None else lookup_backend(name)
    return cls


def _convert_layout(state: Mapping[str, Tensor], src: str, dst: str, registry: Any = None) -> dict[str, Tensor]:
    """Attention tensors converted between layouts: by ``registry`` when one is given, else core's table."""
    if src == dst:
        return dict(state)
    converted: dict[str, Tensor] = (registry.convert_layout if registry is not None else convert_layout)(
        state, src, dst
    )
    return converted


def _hardware() -> Hardware:
    """This machine, as core's backend table probes it."""
    return probe_hardware()


@attrs.frozen(kw_only=True)
class CheckResult:
    """One cell of the matrix: what was checked, where, and how it went."""

    name: str
    """e.g. 'module.step', 'decode.sequential[gru]', 'repeat.module.step'."""
    device: str
    dtype: str
    passed: bool
    detail: str
    """Passed: the worst quantity under the rule. Failed: the worst failing one, both errors and the bound."""
    ratio: float | None = None
    """The worst err / bound of the cell (None when a quantity could not be compared or the cell raised)."""
    comparison: Comparison | None = None
    """Every quantity of the cell under the rule (None for repeat checks and cells that raised)."""

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'}  {self.name:<28} {self.device:<5} {self.dtype:<9} {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["comparison"] = self.comparison.to_dict() if self.comparison is not None else None
        return data


@attrs.frozen(kw_only=True)
class ConformanceReport:
    """Every check run on one backend, and the matrix cells skipped with their reasons."""

    backend: str
    reference: str
    seed: int
    checks: tuple[CheckResult, ...]
    skipped: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when at least one check ran and none failed."""
        return bool(self.checks) and not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def worst_ratio(self) -> float:
        """The largest err / bound over every check (inf when one failed without a number)."""
        return max((float("inf") if c.ratio is None else c.ratio for c in self.checks), default=0.0)

    def format(self) -> str:
        """A readable report: the verdict, then one line per check and per skipped cell."""
        verdict = "PASSED" if self.passed else "FAILED"
        if not self.checks:
            summary = "no check could run"
        else:
            summary = f"{len(self.checks) - len(self.failures)} of {len(self.checks)} checks passed"
        lines = [f"conformance of {self.backend!r} against {self.reference!r} (seed {self.seed}): {verdict}, {summary}"]
        for check in sorted(self.checks, key=lambda c: c.passed):
            lines.append(f"  {check.line()}")
            if not check.passed and check.comparison is not None:
                lines += [f"{'':>8}{q.line()}" for q in _worst_first(check.comparison)[1:]]
        lines += [f"  skip  {s}" for s in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["checks"] = [c.to_dict() for c in self.checks]
        data["skipped"] = list(self.skipped)
        data["passed"] = self.passed
        return data


def _worst_first(comparison: Comparison) -> list[Quantity]:
    return sorted(comparison.failures, key=lambda q: -q.ratio)


def check_backend(
    backend: str | type[AttentionBackend],
    *,
    rnn_kinds: Iterable[str] = RNN_KINDS,
    devices: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    seed: int = 0,
    reference: str | type[AttentionBackend] = "naive",
    registry: Any = None,
) -> ConformanceReport:
    """Run a backend through the conformance matrix and report every check.

    Args:
        backend: the backend class, or the name of a registered backend.
        rnn_kinds: decoder RNN kinds for the whole-model checks ('lstm', 'gru', 'rnn').
        devices: devices to test on; default: those the backend declares that this machine has. Naming
            a device runs there even if the backend does not declare it (its math is tested, its
            device probe bypassed), if the machine has it.
        dtypes: 'float32', 'bfloat16', 'float16'; default: those the backend declares.
        seed: seeds the weights, inputs and teacher-forcing coins.
        reference: the backend to compare with.
        registry: a ``Registry`` of the plugin registry, for names and layout converters; default: the
            process-wide one.

    Returns:
        The report; ``report.passed`` is the verdict and ``report.format()`` explains it.
    """
    cls = _lookup_backend(backend, registry) if isinstance(backend, str) else backend
    ref = _lookup_backend(reference, registry) if isinstance(reference, str) else reference
    source, target = ref.capabilities.layout, cls.capabilities.layout
    kit = Kit(cls, ref, partial(_convert_layout, src=source, dst=target, registry=registry), seed)
    hardware = _hardware()
    explicit_devices = devices is not None
    devices = tuple(devices) if devices is not None else cls.capabilities.devices
    dtypes = tuple(dtypes) if dtypes is not None else cls.capabilities.dtypes
    checks: list[CheckResult] = []
    skipped: list[str] = []
    for device, dtype_str in itertools.product(devices, dtypes):
        if dtype_str not in DTYPE_NAMES:
            raise QuatrainError(f"unknown dtype {dtype_str!r}; known: {', '.join(DTYPE_NAMES)}")
        dtype = DTYPE_NAMES[dtype_str]
        reasons = cls.unsupported_reasons(hardware, device, dtype)
        if explicit_devices:
            reasons = [r for r in reasons if r.code != "device"]
        if not hardware.has(device):
            reasons = [Reason("device", f"no {device} device on this machine")]
        if reasons:
            skipped.append(f"{device} {dtype_str}: " + "; ".join(str(r) for r in reasons))
            continue
        # Float32 means float32: cuDNN's RNNs use TF32 by default on Ampere and later, which alone moves
        # whole-decode gradients (seen on an H200).
        with full_precision():
            checks += _cells(kit, device, dtype, tuple(rnn_kinds))
    name = getattr(cls, "name", cls.__qualname__)
    return ConformanceReport(backend=name, reference=ref.name, seed=seed, checks=tuple(checks), skipped=tuple(skipped))


def _cells(kit: Kit, device: str, dtype: torch.dtype, rnn_kinds: tuple[str, ...]) -> list[CheckResult]:
    caps = kit.caps
    cells: list[tuple[str, Callable[[], Comparison | str]]] = [
        ("module.step", partial(kit.module, device, dtype, "step"))
    ]
    if caps.parallel_decode:
        cells.append(("module.parallel", partial(kit.module, device, dtype, "parallel")))
    if caps.returns_weights:
        cells.append(("module.step weights", partial(kit.module, device, dtype, "step", True)))
        if caps.parallel_decode:
            cells.append(("module.parallel weights", partial(kit.module, device, dtype, "parallel", True)))
    for kind in rnn_kinds:
        cells.append((f"decode.sequential[{kind}]", partial(kit.decode, kind, device, dtype, 0.5)))
        cells.append((f"decode.parallel[{kind}]", partial(kit.decode, kind, device, dtype, 1.0)))
    if caps.deterministic:
        cells.append(("repeat.module.step", partial(kit.repeat_module, device, dtype)))
        for kind in rnn_kinds[:1]:
            cells.append((f"repeat.decode.sequential[{kind}]", partial(kit.repeat_decode, kind, device, dtype)))
    return [_result(name, run, device, dtype_name(dtype)) for name, run in cells]


def _result(name: str, run: Callable[[], Comparison | str], device: str, dtype: str) -> CheckResult:
    """Run one cell: a Comparison under the rule, or a repeat check's '' (identical) or difference."""
    cell = partial(CheckResult, name=name, device=device, dtype=dtype)
    try:
        outcome = run()
    except Exception as e:  # the backend under test raised: a failure to report, not a crash
        message = str(e).strip().splitlines()
        return cell(passed=False, detail=f"raised {type(e).__name__}: {message[0] if message else ''}")
    if isinstance(outcome, str):
        return cell(passed=not outcome, detail=outcome or "bit-identical", ratio=None if outcome else 0.0)
    ratio = outcome.worst_ratio
    if not outcome.quantities:
        return cell(passed=False, detail="nothing to compare (the reference gave no quantity)", comparison=outcome)
    if outcome.passed:
        worst = outcome.worst
        assert worst is not None  # there are quantities
        detail = f"worst {ratio:.2f} of bound: {worst.line()}"
    else:
        failures = _worst_first(outcome)
        detail = failures[0].line() + (f" (and {len(failures) - 1} more, below)" if len(failures) > 1 else "")
    finite = ratio if ratio != float("inf") else None
    return cell(passed=outcome.passed, detail=detail, ratio=finite, comparison=outcome)


def assert_conforms(
    backend: str | type[AttentionBackend],
    *,
    rnn_kinds: Iterable[str] = RNN_KINDS,
    devices: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    seed: int = 0,
    reference: str | type[AttentionBackend] = "naive",
    registry: Any = None,
) -> ConformanceReport:
    """``check_backend`` for pytest: raises AssertionError carrying the formatted report unless it passed."""
    report = check_backend(
        backend, rnn_kinds=rnn_kinds, devices=devices, dtypes=dtypes, seed=seed, reference=reference, registry=registry
    )
    if not report.passed:
        raise AssertionError(report.format())
    return report
