"""The conformance kit fails wrong backends with a readable report, and passes the reference."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs
import pytest
import torch

import quatrain
from quatrain.plugins.naive import NaiveAttention
from quatrain.testing import ConformanceReport, assert_conforms, check_backend


class WrongScale(NaiveAttention):
    """Scales scores by 1/d instead of 1/sqrt(d): plausible, and wrong."""

    name = "wrong-scale"

    def _attend(self, queries, memory, key_mask):
        context, weights = super()._attend(
            queries * (1 / math.sqrt(self.hidden_size // self.num_heads)), memory, key_mask
        )
        return context, weights


class NoGuard(NaiveAttention):
    """Forgets the all-masked row: softmax over -inf gives NaN."""

    name = "no-guard"

    def _attend(self, queries, memory, key_mask):
        B, T, H = queries.shape
        h, d = self.num_heads, H // self.num_heads
        q = self.w_q(queries).view(B, T, h, d).transpose(1, 2)
        k = self.w_k(memory).view(B, -1, h, d).transpose(1, 2)
        v = self.w_v(memory).view(B, -1, h, d).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return self.w_o((weights @ v).transpose(1, 2).reshape(B, T, H)), weights


class DetachedCache(NaiveAttention):
    """The original's bug: K and V computed once under no_grad, so no gradient reaches them."""

    name = "detached-cache"

    def prepare(self, memory, key_mask):
        return memory.detach(), key_mask


class Noisy(NaiveAttention):
    """Declares deterministic but adds fresh noise far below the tolerance."""

    name = "noisy"

    def step(self, query, state, need_weights=False):
        context, weights = super().step(query, state, need_weights)
        return context + 1e-9 * torch.randn(context.shape, generator=None), weights


class ScaledOutput(NaiveAttention):
    """Fast-but-wrong: every context 10 % too large (3 % is caught in the module checks, not always through a
    whole bfloat16 model, whose own rounding is of that order)."""

    name = "scaled-output"

    def _attend(self, queries, memory, key_mask):
        context, weights = super()._attend(queries, memory, key_mask)
        return context * 1.1, weights


class DroppedHead(NaiveAttention):
    """Forgets the last head: its share of the merged context is zero."""

    name = "dropped-head"

    def _attend(self, queries, memory, key_mask):
        B, T, H = queries.shape
        h, d = self.num_heads, H // self.num_heads
        q = self.w_q(queries).view(B, T, h, d).transpose(1, 2)
        k = self.w_k(memory).view(B, -1, h, d).transpose(1, 2)
        v = self.w_v(memory).view(B, -1, h, d).transpose(1, 2)
        safe_mask, has_key = quatrain.key_padding_guard(key_mask)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~safe_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1) * has_key[:, None, None, :].to(scores.dtype)
        context = weights @ v
        context = torch.cat([context[:, :-1], torch.zeros_like(context[:, -1:])], dim=1)
        return self.w_o(context.transpose(1, 2).reshape(B, T, H)), weights


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (WrongScale, r"FAIL  module\.step .*(output|grad \S+): err \S+ > bound \S+ \(k=\d x naive \S+ \+ floor \S+\)"),
        (NoGuard, r"FAIL  module\.step .*has NaN or inf"),
        (DetachedCache, r"FAIL  module\.step .*grad memory: missing"),
        (Noisy, r"FAIL  repeat\.module\.step .*differs between two identical runs"),
        (ScaledOutput, r"FAIL  decode\.parallel\[gru\] .*: err \S+ > bound"),
        (DroppedHead, r"FAIL  module\.parallel .*: err \S+ > bound"),
    ],
    ids=["wrong-scale", "no-guard", "detached-cache", "not-deterministic", "scaled-output", "dropped-head"],
)
def test_wrong_backend_fails_with_a_readable_report(registry, cls, expected):
    report = check_backend(cls, rnn_kinds=("gru",), dtypes=("float32",), registry=registry)
    assert not report.passed
    text = report.format()
    assert text.startswith(f"conformance of {cls.name!r} against 'naive' (seed 0): FAILED")
    assert any(re.search(expected, line) for line in text.splitlines()), text


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("cls", [ScaledOutput, DetachedCache, DroppedHead], ids=lambda c: c.name)
def test_fast_but_wrong_fails_in_low_precision_too(registry, cls, dtype):
    """The bound follows naive's own error in the dtype; it never grows wide enough to let these through."""
    report = check_backend(cls, rnn_kinds=("lstm",), dtypes=(dtype,), registry=registry)
    failed = {c.name for c in report.failures}
    assert {"module.step", "decode.sequential[lstm]", "decode.parallel[lstm]"} <= failed, report.format()


def test_failure_names_the_quantity_both_errors_and_the_bound(registry):
    report = check_backend(ScaledOutput, rnn_kinds=("lstm",), dtypes=("bfloat16",), registry=registry)
    check = next(c for c in report.failures if c.name == "decode.sequential[lstm]")
    line = check.line()
    assert line.startswith("FAIL  decode.sequential[lstm]") and " cpu " in line and " bfloat16 " in line
    assert re.search(r"(output|grad \S+): err \S+ > bound \S+ \(k=\d+ x naive \S+ \+ floor \S+\)", line), line
    quantity = check.comparison.failures[0]
    assert quantity.err > quantity.bound == pytest.approx(quantity.k * quantity.ref_err + quantity.floor)
    assert check.to_dict()["comparison"]["passed"] is False
    json.dumps(report.to_dict())  # serialisable: no inf, no tensors


def test_an_approximation_is_held_to_its_declared_tolerance(registry):
    """exact=False: the declared tolerance x the tensor's scale joins every bound (core/_compare.py)."""

    class Loose(ScaledOutput):
        name = "loose"
        capabilities = attrs.evolve(NaiveAttention.capabilities, exact=False, tolerance=0.3)

    class Tight(ScaledOutput):
        name = "tight"
        capabilities = attrs.evolve(NaiveAttention.capabilities, exact=False, tolerance=1e-3)

    assert check_backend(Loose, rnn_kinds=("rnn",), dtypes=("float32",), registry=registry).passed
    assert not check_backend(Tight, rnn_kinds=("rnn",), dtypes=("float32",), registry=registry).passed


def test_assert_conforms_raises_with_the_report(registry):
    with pytest.raises(AssertionError, match="conformance of 'wrong-scale'.*FAILED"):
        assert_conforms(WrongScale, rnn_kinds=(), dtypes=("float32",), registry=registry)


def test_reference_passes_and_report_serialises(registry):
    report = check_backend("naive", rnn_kinds=("rnn",), dtypes=("float32",), registry=registry)
    assert report.passed and not report.failures
    data = report.to_dict()
    assert data["passed"] is True and data["backend"] == "naive"
    assert {c["name"] for c in data["checks"]} >= {"module.step", "decode.parallel[rnn]", "repeat.module.step"}
    assert all(c["ratio"] is not None and c["ratio"] < 1 for c in data["checks"])
    assert any("cuda float32: no cuda device" in s for s in report.skipped)


def test_nothing_runnable_is_not_a_pass(registry):
    report = check_backend("mps", rnn_kinds=(), registry=registry)
    assert not report.checks and not report.passed
    assert "no check could run" in report.format()


def test_unknown_dtype_is_refused(registry):
    with pytest.raises(quatrain.QuatrainError, match="unknown dtype 'float8'"):
        check_backend("naive", dtypes=("float8",), registry=registry)


def test_matrix_follows_declared_capabilities(registry):
    class NoParallel(NaiveAttention):
        name = "no-parallel"
        capabilities = quatrain.Capabilities(layout="split-qkvo", parallel_decode=False, returns_weights=False)

        def parallel(self, queries: Any, state: Any, need_weights: bool = False) -> Any:
            raise AssertionError("never called when parallel_decode is false")

    report: ConformanceReport = check_backend(NoParallel, rnn_kinds=("lstm",), dtypes=("float32",), registry=registry)
    assert report.passed, report.format()
    names = {c.name for c in report.checks}
    assert "module.parallel" not in names and "module.step weights" not in names
    assert "decode.parallel[lstm]" in names  # the decoder falls back to steps; still checked
