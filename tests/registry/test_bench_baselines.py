"""Bench's two baselines: eager against eager, and a compiled no-attention model against backends that compile."""

from __future__ import annotations

import pytest
import torch

from quatrain.registry._bench import summarise
from quatrain.registry._probe import BASELINE, COMPILED_BASELINE, build_variants, make_batch, wraps_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _variant(name, kind, ms, wraps=False):
    modes = {m: {"median_ms": ms, "x_baseline": None} for m in ("train-seq", "train-par", "infer", "train-epoch")}
    return {"name": name, "kind": kind, "correct": True, "wraps_step": wraps, "modes": modes}


def test_each_backend_is_compared_with_the_baseline_that_runs_its_way():
    variants = [
        _variant(BASELINE, "baseline", 10.0),
        _variant(COMPILED_BASELINE, "baseline", 8.0, wraps=True),
        _variant("naive", "reference", 30.0),
        _variant("eager-fast", "backend", 12.0),
        _variant("compiled-fast", "backend", 9.0, wraps=True),
    ]
    same_way = summarise(variants)["infer"]["same_way"]
    assert same_way["eager"] == {"best": "eager-fast", "median_ms": 12.0, "baseline": BASELINE, "x_baseline": 1.2}
    assert same_way["compiled"]["best"] == "compiled-fast"
    assert same_way["compiled"]["x_baseline"] == pytest.approx(9.0 / 8.0)


def test_only_backends_that_wrap_the_step_count_as_compiled(registry):
    for name, entry in registry.backends.items():
        overrides = "wrap_step" in {
            k for c in entry.cls.__mro__[:-1] for k in vars(c) if c.__module__ != "quatrain._contract"
        }
        assert wraps_step(entry.cls) == overrides, name


def test_compiled_baseline_computes_the_baselines_function(registry, tiny):
    """The compiled no-attention model holds the eager one's weights and gives its outputs."""
    cpu = torch.device("cpu")
    models = build_variants(tiny, [BASELINE, COMPILED_BASELINE], device=cpu, dtype=torch.float32, registry=registry)
    eager, compiled = models[BASELINE].eval(), models[COMPILED_BASELINE].eval()
    assert eager.decoder.compiled_step is None and compiled.decoder.compiled_step is not None
    x, mask = make_batch(tiny, 3, cpu, torch.float32)
    calls = []
    step = compiled.decoder.compiled_step
    compiled.decoder.compiled_step = lambda *args: calls.append(1) or step(*args)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, mask).reconstruction, eager(x, mask).reconstruction)
    assert len(calls) == tiny.max_len  # every decoder step ran compiled
