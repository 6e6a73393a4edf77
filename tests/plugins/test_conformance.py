"""Every built-in backend through the conformance kit, for lstm, gru and rnn decoders (compiled: test_compiled)."""

from __future__ import annotations

import pytest

from quatrain.testing import assert_conforms


@pytest.mark.parametrize("name", ["naive", "fused-qkv", "sdpa-flash", "cached-decoder"])
def test_builtin_backend_conforms(registry, name):
    report = assert_conforms(name, registry=registry)
    ran = {c.name for c in report.checks}
    assert {"decode.sequential[lstm]", "decode.parallel[gru]", "decode.sequential[rnn]", "module.step weights"} <= ran
    assert {c.dtype for c in report.checks} == {"float32", "bfloat16", "float16"}


def test_mps_math_conforms_on_cpu(registry):
    """The mps backend declares only 'mps'; naming the CPU bypasses its device probe and tests its math."""
    report = assert_conforms("mps", devices=("cpu",), registry=registry)
    assert {c.device for c in report.checks} == {"cpu"}
