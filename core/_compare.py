"""The one comparison rule: what "correct" means for a backend against the reference, on every machine.

FlashAttention's tests (``tests/test_flash_attn.py`` in Dao-AILab/flash-attention, and FlashAttention-3's
``hopper/test_flash_attn.py``) compare a fast kernel with a slow one this way, and so does every place in
quatrain that says "correct" (the conformance kit, ``quatrain select``, ``bench``, ``convert`` and
``plugins check``):

- a *golden* result computed by the reference (``naive``) in float64, from the same (rounded) weights and
  inputs as the two runs below;
- the *reference* run in the test dtype: its distance to the golden is what rounding alone costs there;
- the *candidate* run in the test dtype.

For each named quantity (an output, the attention weights, a gradient), with ``err = max|x - golden|``::

    err(candidate) <= k * err(reference) + floor

``k`` is stated per kind of quantity (``K``). ``floor`` is the dtype's rounding at the tensor's scale:
FlashAttention-3's ``2 * (g + 0.3 - 0.3 - g).abs().max()`` in the test dtype on the golden ``g`` cast to it,
with 0.3 taken relative to the tensor's largest magnitude (``0.3 * max|g|``) so that a gradient of size 1e-4
is floored by its own rounding, not by that of 0.3. It covers quantities the reference happens to get almost
exactly right while a correct kernel, summing in another order, rounds once more.

A backend that declares ``exact=False`` (an approximation, e.g. examples/quatrain-local-window) adds its
declared ``Capabilities.tolerance`` times the tensor's largest magnitude to every bound: it promises that
relative error, and no more. An exact backend is held to the rule alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import attrs
import torch
from torch import Tensor, nn

from ._precision import tf32_allowed

__all__ = [
    "FLOOR_SHIFT",
    "Comparison",
    "K",
    "Quantity",
    "compare",
    "full_precision",
    "kind_of",
    "rounding_floor",
    "without_kinks",
]

K = {
    # FlashAttention's factor for outputs: a correct kernel rounds about as often as the reference does,
    # in another order; twice the reference's own error leaves room for that and nothing more.
    "output": 2.0,
    # Attention weights are one softmax deep, like an output.
    "weights": 2.0,
    # Gradients of the attention alone sum over more terms than its outputs, in an order each kernel
    # picks; the most any needed over 20 seeds, both ISAs, was 1.7 (benchmarks/conformance-margins.md).
    "gradient": 4.0,
    # Gradients through a whole Autoencoder (ReLUs made smooth by ``without_kinks``) sum over every decoder
    # step, in an order each backend picks, with cancellation the floor does not see: float32 grad
    # decoder.attention.w_q.weight of cached-decoder needed k=4.8 (benchmarks/conformance-margins.md); 8 leaves room.
    "model gradient": 8.0,
}
"""The factor on the reference's own error, per kind of quantity."""

FLOOR_SHIFT = 0.3
"""FlashAttention-3's shift: ``(g + s) - s`` rounds ``g`` to the grid of ``|g| + s``; here ``s = 0.3 * max|g|``."""


def kind_of(name: str, gradient_kind: str = "gradient") -> str:
    """A quantity's kind from its name: 'grad ...' is ``gradient_kind``, 'weights' is weights, else output."""
    if name.startswith("grad"):
        return gradient_kind
    if name.startswith("weights"):
        return "weights"
    return "output"


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def without_kinks(model: ModuleT) -> ModuleT:
    """Replace every ``nn.ReLU`` in ``model`` by ``nn.SiLU``, in place, for a whole-model comparison.

    A ReLU pre-activation within rounding of 0 takes one branch in one kernel and the other in another,
    which moves one gradient element by the whole upstream gradient: measured 16x (bfloat16) and 271x
    (float16) naive's own error on grad decoder.integrate.0.bias of a correct backend, over 20 seeds. That
    measures where the probe landed, not the backend; all three models of a comparison get the same
    smooth activation, and the backend's function is still compared inside the whole model.
    """
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, nn.SiLU())
    return model


def full_precision() -> AbstractContextManager[None]:
    """float32 means float32: TF32 off for CUDA matmuls and cuDNN (convolutions and RNNs) inside the block."""
    return tf32_allowed(False)


@attrs.frozen(kw_only=True)
class Quantity:
    """One named quantity under the rule: both errors, the bound they give, and the verdict."""

    name: str
    """e.g. 'output', 'weights', 'grad memory', 'grad encoder.rnn.weight_ih_l1'."""
    kind: str
    """'output', 'weights', 'gradient' or 'model gradient': picks ``k``."""
    err: float
    """max|candidate - golden| (inf when missing, of another shape, or not finite)."""
    ref_err: float
    """max|reference - golden|: what the dtype's rounding costs the reference itself."""
    floor: float
    k: float
    allowance: float = 0.0
    """An approximate backend's declared tolerance times max|golden| (0 for exact backends)."""
    reference: str = "naive"
    """The reference backend, as lines name it."""
    bound: float
    passed: bool
    problem: str = ""
    """Why it failed before any number could be compared: 'missing', 'shape ...', 'has NaN or inf'."""

    @property
    def ratio(self) -> float:
        """err / bound: below 1 passes; the margin a table reports."""
        if self.err == 0:
            return 0.0
        return self.err / self.bound if self.bound > 0 else math.inf

    def line(self) -> str:
        """``grad x: err 3.1e-02 > bound 2.0e-02 (k=4 x naive 4.9e-03 + floor 4.0e-04)``."""
        if self.problem:
            return f"{self.name}: {self.problem}"
        op = "<=" if self.passed else ">"
        extra = f" + declared {self.allowance:.1e}" if self.allowance else ""
        return (
            f"{self.name}: err {self.err:.1e} {op} bound {self.bound:.1e} "
            f"(k={self.k:g} x {self.reference} {self.ref_err:.1e} + floor {self.floor:.1e}{extra})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["ratio"] = self.ratio
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


@attrs.frozen(kw_only=True)
class Comparison:
    """Every quantity of one comparison under the rule."""

    quantities: tuple[Quantity, ...]

    @property
    def passed(self) -> bool:
        return all(q.passed for q in self.quantities)

    @property
    def failures(self) -> list[Quantity]:
        return [q for q in self.quantities if not q.passed]

    @property
    def worst(self) -> Quantity | None:
        """The quantity closest to (or furthest past) its bound; a failure first."""
        if not self.quantities:
            return None
        return max(self.quantities, key=lambda q: (not q.passed, q.ratio))

    @property
    def worst_ratio(self) -> float:
        """The largest err / bound (0 with no quantity; inf when one could not be compared)."""
        worst = self.worst
        return 0.0 if worst is None else worst.ratio

    def lines(self) -> list[str]:
        """One line per quantity, failures first."""
        return [q.line() for q in sorted(self.quantities, key=lambda q: (q.passed, -q.ratio))]

    def format(self) -> str:
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures)} of {len(self.quantities)})"
        return "\n".join([f"comparison {verdict}, worst err/bound {self.worst_ratio:.2f}", *self.lines()])

    def to_dict(self) -> dict[str, Any]:
        ratio = self.worst_ratio
        return {
            "passed": self.passed,
            "worst_ratio": ratio if math.isfinite(ratio) else None,
            "quantities": [q.to_dict() for q in self.quantities],
        }


def rounding_floor(golden: Tensor, dtype: torch.dtype) -> float:
    """The dtype's rounding at the tensor's scale: ``2 * max|(g + s) - s - g|``, ``s = 0.3 * max|g|``, in ``dtype``."""
    if not golden.numel():
        return 0.0
    g = golden.detach().to(dtype)
    shift = FLOOR_SHIFT * float(g.abs().max())
    if shift == 0 or not math.isfinite(shift):
        return 0.0
    return 2.0 * float(((g + shift) - shift - g).abs().max())


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _problem(name: str, golden: Tensor, got: Tensor | None, role: str) -> str:
    if got is None:
        return f"missing (the {role} gives no {name!r})" if role == "candidate" else ""
    if tuple(got.shape) != tuple(golden.shape):
        return f"shape {tuple(got.shape)}, golden {tuple(golden.shape)}"
    if not bool(torch.isfinite(got).all()):
        return "has NaN or inf"
    return ""


def compare(
    golden: Mapping[str, Tensor | None],
    reference: Mapping[str, Tensor | None],
    candidate: Mapping[str, Tensor | None],
    *,
    dtype: torch.dtype | None = None,
    tolerance: float = 0.0,
    k: Mapping[str, float] | None = None,
    gradient_kind: str = "gradient",
    reference_name: str = "naive",
) -> Comparison:
    """Judge ``candidate`` against ``golden`` by the one rule, each quantity the golden has.

    Args:
        golden: the reference backend's results in float64, by name (None: the quantity does not exist).
        reference: the reference backend's results in the test dtype, by the same names.
        candidate: the backend under test's results in the test dtype.
        dtype: the test dtype (for the floor); default: the candidate's (else the reference's) tensor dtype.
        tolerance: relative error an approximate backend declares (``Capabilities.tolerance`` when
            ``exact=False``); 0 for exact backends.
        k: per-kind factors replacing ``K``'s.
        gradient_kind: the kind of 'grad ...' quantities: 'gradient' (the attention module alone) or
            'model gradient' (through a whole model, across its ReLUs).
        reference_name: how lines name the reference's error.

    Returns:
        The comparison; a quantity the golden has and the candidate lacks fails as missing, and one the
        candidate has that the golden lacks fails as unexpected.
    """
    factors = {**K, **(k or {})}
    found: list[Quantity] = []
    for name, want in golden.items():
        got, ref = candidate.get(name), reference.get(name)
        kind = kind_of(name, gradient_kind)
        factor = factors[kind]
        if want is None:
            if got is not None:
                found.append(_failed(name, kind, factor, "unexpected (the golden has none)"))
            continue
        problem = _problem(name, want, got, "candidate")
        ref_problem = _problem(name, want, ref, "reference") or ("missing from the reference" if ref is None else "")
        if problem or ref_problem:
            found.append(_failed(name, kind, factor, problem or f"cannot compare: reference {ref_problem}"))
            continue
        assert got is not None and ref is not None  # _problem said so
        test_dtype = dtype or got.dtype
        err, ref_err = _max_abs(got, want), _max_abs(ref, want)
        floor = rounding_floor(want, test_dtype)
        scale = float(want.detach().abs().max()) if want.numel() else 0.0
        allowance = tolerance * scale
        bound = factor * ref_err + floor + allowance
        found.append(
            Quantity(
                name=name,
                kind=kind,
                err=err,
                ref_err=ref_err,
                floor=floor,
                k=factor,
                allowance=allowance,
                reference=reference_name,
                bound=bound,
                passed=err <= bound,
            )
        )
    for name, got in candidate.items():
        if name not in golden and got is not None:
            kind = kind_of(name, gradient_kind)
            found.append(_failed(name, kind, factors[kind], "unexpected (the golden has none)"))
    return Comparison(quantities=tuple(found))


def _failed(name: str, kind: str, k: float, problem: str) -> Quantity:
    inf = math.inf
    return Quantity(
        name=name, kind=kind, err=inf, ref_err=math.nan, floor=math.nan, k=k, bound=0.0, passed=False, problem=problem
    )
