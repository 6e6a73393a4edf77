"""mps: unavailable without Apple Metal, with reasons; its known-issue table is consulted by the probe."""

from __future__ import annotations

import attrs
import torch

from quatrain.plugins import mps
from quatrain.registry import detect_hardware


def test_unavailable_here_with_a_reason_and_a_hint(registry):
    cls = registry.backend("mps").cls
    hardware = detect_hardware()
    assert not hardware.mps_available
    reasons = cls.unsupported_reasons(hardware, "mps", torch.float32)
    assert reasons and reasons[0].code == "device"
    assert "no mps device" in reasons[0].message and reasons[0].hint
    assert cls.unsupported_reasons(hardware, "cpu", torch.float32)[0].message == "mps does not run on cpu"


def test_known_issues_are_consulted(monkeypatch):
    hardware = attrs.evolve(detect_hardware(), device="mps", mps_available=True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    assert mps.MPSAttention.unsupported_reasons(hardware, "mps", torch.float32) == []
    monkeypatch.setattr(mps, "_macos_version", lambda: (13, 6))
    [reason] = mps.MPSAttention.unsupported_reasons(hardware, "mps", torch.bfloat16)
    assert reason.code == "dtype" and "macOS 14" in reason.message
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    codes = [r.code for r in mps.MPSAttention.unsupported_reasons(hardware, "mps", torch.float32)]
    assert codes == ["package"]
