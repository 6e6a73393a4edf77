"""The one comparison rule on hand-made cases: err(candidate) <= k * err(reference) + floor, per quantity."""

from __future__ import annotations

import json
import math

import pytest
import torch

from quatrain._compare import K, compare, full_precision, kind_of, rounding_floor


def _golden(n: int = 64, scale: float = 1.0) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float64) * scale


def test_passes_within_k_times_the_reference_error_plus_the_floor():
    golden = _golden()
    reference = golden + 1e-3  # the reference's own rounding, say
    candidate = golden - 1.5e-3  # further off, yet within 2 x 1e-3 + floor
    result = compare({"output": golden}, {"output": reference}, {"output": candidate}, dtype=torch.float32)
    (q,) = result.quantities
    assert result.passed and not result.failures
    assert q.kind == "output" and q.k == K["output"] == 2.0
    assert q.err == pytest.approx(1.5e-3) and q.ref_err == pytest.approx(1e-3)
    assert q.bound == pytest.approx(2 * 1e-3 + q.floor)
    assert q.ratio == pytest.approx(1.5e-3 / q.bound)
    assert "output: err 1.5e-03 <= bound" in q.line()


def test_fails_past_the_bound_and_says_by_how_much():
    golden = _golden()
    result = compare(
        {"grad memory": golden}, {"grad memory": golden + 1e-3}, {"grad memory": golden * 1.1}, dtype=torch.float32
    )
    (q,) = result.failures
    assert not result.passed and q.kind == "gradient" and q.k == K["gradient"]
    assert result.worst_ratio == pytest.approx(0.1 / (K["gradient"] * 1e-3 + q.floor))
    assert q.line().startswith("grad memory: err 1.0e-01 > bound ")
    assert f"(k={K['gradient']:g} x naive 1.0e-03 + floor " in q.line()


def test_a_quantity_the_candidate_lacks_fails_as_missing():
    """A detached cache gives no memory gradient: that is a failure, not a pass by omission."""
    golden = {"output": _golden(), "grad memory": _golden()}
    result = compare(golden, golden, {"output": _golden(), "grad memory": None})
    (q,) = result.failures
    assert q.name == "grad memory" and "missing" in q.line()
    assert math.isinf(result.worst_ratio)
    assert json.dumps(result.to_dict())  # inf serialises as null, not as invalid JSON


def test_an_unexpected_quantity_and_wrong_shapes_and_nan_fail():
    golden = {"output": _golden(8), "weights": None}
    candidate = {"output": torch.full((8,), math.nan), "weights": torch.zeros(2)}
    assert {q.problem for q in compare(golden, golden, candidate).failures} == {
        "has NaN or inf",
        "unexpected (the golden has none)",
    }
    (shape,) = compare({"output": _golden(8)}, {"output": _golden(8)}, {"output": _golden(9)}).failures
    assert shape.problem == "shape (9,), golden (8,)"


def test_floor_is_the_dtypes_rounding_at_the_tensors_scale():
    """FlashAttention-3's 2 * max|(g + s) - s - g| with s = 0.3 * max|g|: it scales with the tensor."""
    golden = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bf16 = rounding_floor(golden, torch.bfloat16)
    assert rounding_floor(golden * 2.0**-12, torch.bfloat16) == pytest.approx(bf16 * 2.0**-12)
    assert rounding_floor(golden, torch.float16) < bf16 / 4  # 10 mantissa bits against 7
    assert rounding_floor(golden, torch.float32) < rounding_floor(golden, torch.float16) / 1000
    scale = golden.abs().max().item()
    assert 2.0**-8 * scale <= bf16 <= 2.0**-5 * scale  # a few units in the last place, at the scale
    assert rounding_floor(torch.zeros(5, dtype=torch.float64), torch.bfloat16) == 0.0
    assert rounding_floor(torch.zeros(0, dtype=torch.float64), torch.bfloat16) == 0.0


def test_floor_passes_a_correct_kernel_where_the_reference_is_exact():
    """Where the reference happens to round to the golden exactly, a correct kernel may still round once."""
    golden = _golden(16).to(torch.bfloat16).double()  # exactly representable: the reference's error is 0
    candidate = golden.to(torch.bfloat16) + torch.tensor(2.0**-9, dtype=torch.bfloat16)  # within an ulp
    result = compare({"output": golden}, {"output": golden.to(torch.bfloat16)}, {"output": candidate})
    assert result.passed, result.format()
    assert result.quantities[0].ref_err == 0.0
    assert not compare({"output": golden}, {"output": golden.to(torch.bfloat16)}, {"output": candidate * 1.5}).passed


def test_declared_tolerance_widens_the_bound_relative_to_the_scale():
    golden = _golden(scale=4.0)
    candidate = golden * 1.001  # 0.1 % off: an approximation
    strict = compare({"output": golden}, {"output": golden}, {"output": candidate}, dtype=torch.float32)
    loose = compare({"output": golden}, {"output": golden}, {"output": candidate}, dtype=torch.float32, tolerance=1e-3)
    assert not strict.passed and loose.passed
    assert loose.quantities[0].allowance == pytest.approx(4e-3)
    assert "+ declared 4.0e-03" in loose.quantities[0].line()


def test_kinds_and_k_overrides():
    assert [kind_of(n) for n in ("output", "output tf 0.0", "weights", "grad x", "grad w_q.weight")] == [
        "output",
        "output",
        "weights",
        "gradient",
        "gradient",
    ]
    golden = _golden()
    result = compare({"grad x": golden}, {"grad x": golden + 1e-3}, {"grad x": golden + 5e-3}, k={"gradient": 8.0})
    assert result.passed and result.quantities[0].k == 8.0


def test_full_precision_turns_tf32_off_and_restores_it():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with full_precision():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
    assert torch.backends.cudnn.allow_tf32 == before[1]
