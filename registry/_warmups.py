"""Measured warm-ups: what each backend's first steps cost beyond normal steps (compile, graph capture), per
hardware fingerprint, torch version and kind of step (``step_kind``: 'train-seq', 'train-par' or 'infer'), in
``warmups.json`` beside the selection cache.

Selection weighs a backend's warm-up against the job's length. A backend declares a figure
(``Capabilities.warmup_seconds``: ``compiled``'s is a cold compile on the 2-core CPU); that figure is used only
until the warm-up has been measured on this hardware, by ``quatrain select`` / ``--backend auto`` (its timing
steps) or by ``quatrain bench`` (its warm-up calls). A leaf (core and _cache only).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from quatrain import AttentionBackend, Hardware

from ._cache import JsonEntries, cache_path

WARMUP_FILE = "warmups.json"
WARMUP_FORMAT = "quatrain-warmups/1"


def step_kind(mode: str, teacher_forcing: float) -> str:
    """What a job's steps compile and capture: 'infer', or a sequential or parallel ('train-par', teacher forcing
    1.0) training step; their warm-ups differ (``compiled`` compiles the sequential decoder step only)."""
    if mode == "infer":
        return "infer"
    return "train-par" if teacher_forcing >= 1.0 else "train-seq"


def _key(hardware: Hardware, backend: str, mode: str) -> str:
    return f"{hardware.fingerprint()}|torch {torch.__version__}|{backend}|{mode}"


class WarmupCache:
    """Measured warm-up seconds; an unreadable file is ignored (the declared figures apply) and rewritten."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path().with_name(WARMUP_FILE)
        self._file = JsonEntries(self.path, WARMUP_FORMAT, "warm-up cache", warn_foreign=False)

    def _read(self) -> dict[str, Any]:
        return self._file.read()

    def measured(self, hardware: Hardware, backend: str, mode: str) -> float | None:
        """The last measured warm-up of ``backend`` for steps of kind ``mode`` (``step_kind``) here, or None."""
        entry = self._read().get(_key(hardware, backend, mode))
        seconds = entry.get("seconds") if isinstance(entry, dict) else None
        return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else None

    def estimate(self, cls: type[AttentionBackend], hardware: Hardware, mode: str) -> tuple[float, str]:
        """(seconds, 'measured' or 'declared'): the measurement here if there is one, else the declaration."""
        seconds = self.measured(hardware, cls.name, mode)
        if seconds is not None:
            return seconds, "measured"
        return float(cls.capabilities.warmup_seconds), "declared"

    def record(self, hardware: Hardware, backend: str, mode: str, seconds: float) -> None:
        """Keep a measurement (the latest wins); a read-only cache folder costs a re-measurement, nothing more."""
        entries = self._read()
        entries[_key(hardware, backend, mode)] = {
            "seconds": round(max(0.0, float(seconds)), 3),
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._file.write(entries)
