"""Issue 12, finding 13: a damaged selection-cache entry is measured again, never fatal."""

from __future__ import annotations

import json

import pytest

from quatrain.registry import _cache, select_backend

from .test_select import Clock, _fakes, job  # noqa: F401 - _fakes is the 'fakes' fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("field", "value"), [("step_ms", "fast"), ("warmup_s", [1]), ("ratio", {"x": 1}), ("name", 3)], ids=str
)
def test_a_cache_entry_with_a_bad_value_is_measured_again(fakes, tiny, field, value):
    """A selection-cache entry with step_ms 'fast' made every later select fail until --refresh."""
    first = select_backend(job(tiny), registry=fakes, timer=Clock())
    path = _cache.cache_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    for candidate in data["entries"][first.key]["candidates"]:
        candidate[field] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    clock = Clock()
    again = select_backend(job(tiny), registry=fakes, timer=clock)
    assert not again.cached and clock.calls
    assert again.backend == first.backend and again.lines()
