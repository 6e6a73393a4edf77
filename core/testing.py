"""The conformance kit: run any attention backend against ``naive`` and get a readable verdict.

``check_backend(cls)`` builds its matrix from the backend's declared capabilities (devices present here,
dtypes, training, parallel decode, weights) and compares with the ``naive`` reference, whose weights are
converted to the backend's layout through the registry's converters:

- the attention module alone, ``step`` (three steps sharing one ``prepare``) and ``parallel``: outputs,
  attention weights (when declared), gradients of every parameter (naive's converted to the layout)
  and of the queries and memory, on random inputs with random key masks, including a row with every
  key masked (must give zeros, never NaN) and a row with one key;
- the whole ``Autoencoder`` for each RNN kind: sequential decode at teacher forcing 0.5 (same coins
  for both) and the parallel decode at 1.0, dropout 0, lengths 0..T;
- bit-identical repeats when the backend declares ``deterministic``.

Errors are relative to the reference's largest magnitude: ``max|got - want| / max|want|`` per tensor.
Bars: float32 1e-5 (or the backend's declared ``tolerance`` if looser), bfloat16 4e-2, float16 5e-3
(a reference computed in the same low precision differs by its own rounding; see ``TOLERANCES``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import attrs
import torch
from torch import Tensor

from ._config import RNN_KINDS, ModelConfig
from ._contract import DTYPE_NAMES, AttentionBackend, Reason, dtype_name
from ._errors import QuatrainError
from ._model import Autoencoder
from ._resolve import convert_layout, lookup_backend
from ._resolve import hardware as probe_hardware

__all__ = ["TOLERANCES", "CheckResult", "ConformanceReport", "assert_conforms", "check_backend"]

TOLERANCES = {"float32": 1e-5, "bfloat16": 4e-2, "float16": 5e-3}
"""Relative error bars per dtype; low precision bars cover the reference's own rounding."""

ATTENTION_PREFIX = "decoder.attention."
Convert = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]


@attrs.frozen(kw_only=True)
class CheckResult:
    """One cell of the matrix: what was checked, where, and how it went."""

    name: str
    """e.g. 'module.step', 'decode.sequential[gru]', 'repeat.module.step'."""
    device: str
    dtype: str
    passed: bool
    detail: str
    """'max rel err 3.1e-08' when passed; what differed, and by how much, when not."""
    max_error: float | None = None
    tolerance: float | None = None

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'}  {self.name:<28} {self.device:<5} {self.dtype:<9} {self.detail}"


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

    def format(self) -> str:
        """A readable report: the verdict, then one line per check and per skipped cell."""
        verdict = "PASSED" if self.passed else "FAILED"
        if not self.checks:
            summary = "no check could run"
        else:
            summary = f"{len(self.checks) - len(self.failures)} of {len(self.checks)} checks passed"
        lines = [f"conformance of {self.backend!r} against {self.reference!r} (seed {self.seed}): {verdict}, {summary}"]
        lines += [f"  {c.line()}" for c in sorted(self.checks, key=lambda c: c.passed)]
        lines += [f"  skip  {s}" for s in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["passed"] = self.passed
        return data


def _errors(got: Mapping[str, Tensor | None], want: Mapping[str, Tensor | None]) -> dict[str, float]:
    """Relative error of each tensor both have (inf where shapes differ or ``got`` is not finite)."""
    errors = {}
    for key, w in want.items():
        g = got.get(key)
        if w is not None and g is not None and g.shape == w.shape and g.numel():
            scale = w.double().abs().max().item()
            diff = (g.double() - w.double()).abs().max().item()
            errors[key] = diff / scale if scale > 0 else diff
    return errors


def _compare(
    got: Mapping[str, Tensor | None],
    want: Mapping[str, Tensor | None],
    tol: float,
    baseline: Mapping[str, float] | None = None,
) -> tuple[float, float, str]:
    """Compare tensor by tensor: (error, bar) of the tensor closest to its bar, and '' or the first problem.

    ``baseline``: the reference's own error per tensor in the same low precision; a tensor may then
    err up to twice that (that rounding is the model's, not the backend's).
    """
    worst, worst_bar = 0.0, tol
    for key, w in want.items():
        g = got.get(key)
        if w is None or g is None:
            if (w is None) != (g is None):
                return (
                    float("inf"),
                    tol,
                    f"{key}: {'missing' if g is None else 'unexpected'} (the reference has it: {w is not None})",
                )
            continue
        if tuple(g.shape) != tuple(w.shape):
            return float("inf"), tol, f"{key}: shape {tuple(g.shape)}, reference {tuple(w.shape)}"
        if not bool(torch.isfinite(g).all()):
            return float("inf"), tol, f"{key}: has NaN or inf"
        diff = (g.double() - w.double()).abs().max().item() if g.numel() else 0.0
        scale = w.double().abs().max().item() if w.numel() else 0.0
        error = diff / scale if scale > 0 else diff
        bar = max(tol, 2 * baseline.get(key, 0.0)) if baseline else tol
        if error > bar:
            return error, bar, f"{key}: max rel err {error:.2e} > {bar:.1e} (max abs diff {diff:.2e})"
        if error / bar >= worst / worst_bar:
            worst, worst_bar = error, bar
    return worst, worst_bar, ""


def _grads(named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, Tensor | None]:
    return {name: (p.grad.detach().clone() if p.grad is not None else None) for name, p in named}


class _Kit:
    """One run of the kit: the backend, the reference, the converter between their layouts."""

    def __init__(self, cls: type[AttentionBackend], ref: type[AttentionBackend], convert: Convert, seed: int) -> None:
        self.cls, self.ref, self.convert, self.seed = cls, ref, convert, seed
        self.caps = cls.capabilities

    def _pair(self, device: str, dtype: torch.dtype, hidden: int = 32, heads: int = 4) -> tuple[Any, Any]:
        torch.manual_seed(self.seed)
        ref = self.ref(hidden, heads).to(device=device, dtype=dtype)
        mod = self.cls(hidden, heads).to(device=device, dtype=dtype)
        mod.load_state_dict(self.convert(ref.state_dict()), strict=True)
        return ref, mod

    def _inputs(self, device: str, dtype: torch.dtype, T: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        B, S, H = 6, 7, 32
        key_mask = torch.rand(B, S, generator=gen) < 0.6
        key_mask[0] = False  # every key masked: must give zeros, never NaN
        key_mask[1] = False
        key_mask[1, 3] = True  # exactly one key
        key_mask[2] = True  # no padding
        tensors = {
            "query": torch.randn(B, T, H, generator=gen),
            "memory": torch.randn(B, S, H, generator=gen),
            "cotangent": torch.randn(B, T, H, generator=gen),
        }
        out = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
        out["key_mask"] = key_mask.to(device)
        return out

    def _run_module(
        self, module: Any, data: Mapping[str, Tensor], mode: str, weights: bool
    ) -> dict[str, Tensor | None]:
        train = self.caps.training and not weights
        dtype = next(module.parameters()).dtype
        query = data["query"].to(dtype, copy=True).requires_grad_(train)
        memory = data["memory"].to(dtype, copy=True).requires_grad_(train)
        module.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(train):
            state = module.prepare(memory, data["key_mask"])
            if mode == "step":
                steps = [module.step(query[:, t], state, need_weights=weights) for t in range(query.shape[1])]
                out = torch.stack([c for c, _ in steps], dim=1)
                w = torch.stack([w for _, w in steps], dim=2) if weights and steps[0][1] is not None else None
            else:
                out, w = module.parallel(query, state, need_weights=weights)
        result: dict[str, Tensor | None] = {"output": out.detach()}
        if weights:
            result["weights"] = w.detach() if w is not None else None
        if train:
            (out * data["cotangent"].to(dtype)).sum().backward()
            result |= {"grad query": query.grad, "grad memory": memory.grad}
            result |= {f"grad {k}": v for k, v in _grads(module.named_parameters()).items()}
        return result

    def _converted_grads(self, result: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
        """Reference parameter gradients mapped to the backend's layout (converters are linear)."""
        names = [k[len("grad ") :] for k in result if k.startswith("grad ") and "." in k]  # parameters
        grads = {n: result.pop(f"grad {n}") for n in names}
        if not grads or any(g is None for g in grads.values()):
            return result
        return result | {f"grad {k}": v for k, v in self.convert(grads).items()}  # type: ignore[arg-type]

    def module(self, device: str, dtype: torch.dtype, mode: str, weights: bool = False) -> tuple[float, float, str]:
        data = self._inputs(device, dtype, T=3 if mode == "step" else 5)
        ref_low, mod = self._pair(device, dtype)
        ref = copy.deepcopy(ref_low).float()  # float32 on the same rounded weights and inputs
        want = self._converted_grads(self._run_module(ref, data, mode, weights))
        got = self._run_module(mod, data, mode, weights)
        baseline = None
        if dtype != torch.float32:
            baseline = _errors(self._converted_grads(self._run_module(ref_low, data, mode, weights)), want)
        return _compare(got, want, self.tolerance(dtype), baseline)

    def _models(self, kind: str, device: str, dtype: torch.dtype) -> tuple[Autoencoder, Autoencoder]:
        config = ModelConfig.preset("tiny", rnn=kind, dropout=0.0)
        torch.manual_seed(self.seed)
        ref = Autoencoder(config, self.ref)
        model = Autoencoder(config, self.cls)
        state = ref.state_dict()
        attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in state.items() if k.startswith(ATTENTION_PREFIX)}
        rest = {k: v for k, v in state.items() if not k.startswith(ATTENTION_PREFIX)}
        model.load_state_dict(rest | {ATTENTION_PREFIX + k: v for k, v in self.convert(attention).items()})
        return ref.to(device=device, dtype=dtype), model.to(device=device, dtype=dtype)

    def _run_model(self, model: Autoencoder, data: Mapping[str, Tensor], tf: float) -> dict[str, Tensor | None]:
        model.train(self.caps.training)
        dtype = next(model.parameters()).dtype
        x = data["x"].to(dtype, copy=True).requires_grad_(self.caps.training)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(self.seed)  # the same teacher-forcing coins for both models
        with torch.set_grad_enabled(self.caps.training):
            out = model(x, data["mask"], teacher_forcing=tf).reconstruction
        result: dict[str, Tensor | None] = {"output": out.detach()}
        if self.caps.training:
            (out * data["cotangent"].to(dtype)).sum().backward()
            result["grad x"] = x.grad
            result |= {f"grad {k}": v for k, v in _grads(model.named_parameters()).items()}
        return result

    def _decode_inputs(self, device: str, dtype: torch.dtype) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 2)
        T, E = 8, ModelConfig.PRESETS["tiny"]["embed_dim"]
        lengths = torch.tensor([T, 1, 0, *torch.randint(1, T + 1, (3,), generator=gen).tolist()])
        return {
            "x": torch.randn(len(lengths), T, E, generator=gen).to(device=device, dtype=dtype),
            "mask": (torch.arange(T)[None, :] < lengths[:, None]).to(device),
            "cotangent": torch.randn(len(lengths), T, E, generator=gen).to(device=device, dtype=dtype),
        }

    def decode(self, kind: str, device: str, dtype: torch.dtype, tf: float) -> tuple[float, float, str]:
        data = self._decode_inputs(device, dtype)
        ref_low, model = self._models(kind, device, dtype)
        ref = copy.deepcopy(ref_low).float()  # float32 on the same rounded weights and inputs
        want = self._decode_reference(ref, data, tf)
        got = self._run_model(model, data, tf)
        baseline = None
        if dtype != torch.float32:
            baseline = _errors(self._decode_reference(ref_low, data, tf), want)
        return _compare(got, want, self.tolerance(dtype), baseline)

    def _decode_reference(self, ref: Autoencoder, data: Mapping[str, Tensor], tf: float) -> dict[str, Tensor | None]:
        want = self._run_model(ref, data, tf)
        prefix = "grad " + ATTENTION_PREFIX
        grads = {k[len(prefix) :]: want.pop(k) for k in list(want) if k.startswith(prefix)}
        if grads and all(g is not None for g in grads.values()):
            want |= {prefix + k: v for k, v in self.convert(grads).items()}  # type: ignore[arg-type]
        return want

    def repeat_module(self, device: str, dtype: torch.dtype) -> tuple[float, float, str]:
        data = self._inputs(device, dtype, T=3)
        module = self._pair(device, dtype)[1]
        return self._repeat(lambda: self._run_module(module, data, "step", False))

    def repeat_decode(self, kind: str, device: str, dtype: torch.dtype) -> tuple[float, float, str]:
        data = self._decode_inputs(device, dtype)
        model = self._models(kind, device, dtype)[1]
        return self._repeat(lambda: self._run_model(model, data, 0.5))

    def _repeat(self, run: Callable[[], dict[str, Tensor | None]]) -> tuple[float, float, str]:
        first, second = run(), run()
        for key, a in first.items():
            b = second.get(key)
            if (a is None) != (b is None) or (a is not None and b is not None and not torch.equal(a, b)):
                return float("inf"), 0.0, f"{key}: differs between two identical runs (declared deterministic)"
        return 0.0, 0.0, ""

    def tolerance(self, dtype: torch.dtype) -> float:
        return max(TOLERANCES.get(dtype_name(dtype), 1e-5), self.caps.tolerance)


def _lookup(registry: Any, backend: str | type[AttentionBackend]) -> type[AttentionBackend]:
    if isinstance(backend, str):
        cls: type[AttentionBackend] = lookup_backend(backend) if registry is None else registry.backend(backend).cls
        return cls
    return backend


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
        registry: a ``quatrain.registry.Registry`` for names and layout converters; default: the
            process-wide one.

    Returns:
        The report; ``report.passed`` is the verdict and ``report.format()`` explains it.
    """
    cls, ref = _lookup(registry, backend), _lookup(registry, reference)
    source, target = ref.capabilities.layout, cls.capabilities.layout

    def convert(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if source == target:
            return dict(state)
        return (registry.convert_layout if registry is not None else convert_layout)(state, source, target)

    kit = _Kit(cls, ref, convert, seed)
    hardware = probe_hardware()  # the backend table's probe (core/_resolve.py)
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
        # whole-decode gradients past 1e-5 (seen on an H200); matmuls already default to full precision.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            checks += _cells(kit, device, dtype, tuple(rnn_kinds))
    name = getattr(cls, "name", cls.__qualname__)
    return ConformanceReport(backend=name, reference=ref.name, seed=seed, checks=tuple(checks), skipped=tuple(skipped))


def _cells(kit: _Kit, device: str, dtype: torch.dtype, rnn_kinds: tuple[str, ...]) -> list[CheckResult]:
    caps = kit.caps
    cells: list[tuple[str, Callable[[], tuple[float, float, str]]]] = [
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
    return [_result(name, run, device, dtype) for name, run in cells]


def _result(name: str, run: Callable[[], tuple[float, float, str]], device: str, dtype: torch.dtype) -> CheckResult:
    try:
        error, bar, problem = run()
    except Exception as e:  # the backend under test raised: a failure to report, not a crash
        message = str(e).strip().splitlines()
        error, bar, problem = float("inf"), 0.0, f"raised {type(e).__name__}: {message[0] if message else ''}"
    detail = problem or (f"max rel err {error:.1e} (bar {bar:.1e})" if bar else "bit-identical")
    return CheckResult(
        name=name,
        device=device,
        dtype=dtype_name(dtype),
        passed=not problem,
        detail=detail,
        max_error=None if error == float("inf") else error,
        tolerance=bar,
    )


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
