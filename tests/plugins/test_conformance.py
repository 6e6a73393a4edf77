"""Every built-in backend through the conformance kit (lstm, gru, rnn), generated from the registry, on two oneDNN ISAs.

Built-ins are the backends the project's own distribution registers. One whose declared warm-up is long
(``compiled``: a cold ``torch.compile`` per dtype and RNN kind) is run in its own file (test_compiled.py).
oneDNN picks its kernels by instruction set when the interpreter starts, so the bfloat16 and float16 checks
also run in fresh interpreters under ``ONEDNN_MAX_CPU_ISA=AVX2`` and under the default (AVX-512 here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from quatrain.registry import OWN_DISTRIBUTION, load_registry
from quatrain.testing import assert_conforms

EXPENSIVE_WARMUP_S = 10.0
"""Built-ins declaring a longer warm-up get their own, smaller test (one cold compile each)."""


def _builtins() -> dict[str, dict[str, object]]:
    """Name -> how to run it: devices (a device-specific backend's math is tested on CPU), or why not here."""
    found = {}
    for name, entry in sorted(load_registry(disabled=()).backends.items()):
        if entry.distribution != OWN_DISTRIBUTION:
            continue
        caps = entry.cls.capabilities
        found[name] = {
            "devices": None if "cpu" in caps.devices else ("cpu",),
            "expensive": caps.warmup_seconds > EXPENSIVE_WARMUP_S,
            "missing": [package for package in caps.requires if importlib.util.find_spec(package) is None],
        }
    return found


BUILTINS = _builtins()
CHEAP = [name for name, how in BUILTINS.items() if not how["expensive"] and not how["missing"]]
"""Run here: not slow to warm up, and every package it requires installed (a backend that needs one, like
triton-step, is also tested in its own file wherever the package is: tests/plugins/test_triton_step.py)."""


def test_builtins_come_from_the_registry():
    assert {"naive", "fused-qkv", "sdpa-flash", "cached-decoder", "mps", "compiled", "triton-step"} <= set(BUILTINS)
    assert [name for name, how in BUILTINS.items() if how["expensive"]] == ["compiled"]
    assert {"naive", "cached-decoder", "deferred-kv", "mps"} <= set(CHEAP)


@pytest.mark.parametrize("name", CHEAP)
def test_builtin_backend_conforms(registry, name):
    report = assert_conforms(name, devices=BUILTINS[name]["devices"], registry=registry)
    ran = {c.name for c in report.checks}
    assert {"decode.sequential[lstm]", "decode.parallel[gru]", "decode.sequential[rnn]", "module.step"} <= ran
    assert {c.dtype for c in report.checks} == set(registry.backend(name).cls.capabilities.dtypes)
    assert all(c.ratio is not None and c.ratio < 1 for c in report.checks)
    if BUILTINS[name]["devices"]:  # e.g. mps: naming the CPU bypasses its device probe and tests its math
        assert {c.device for c in report.checks} == {"cpu"}


LOW_PRECISION = """
    import json, sys
    import torch
    from quatrain.testing import check_backend

    torch.set_num_threads(1)
    spec = json.loads(sys.argv[1])
    out = {}
    for name, devices in spec.items():
        report = check_backend(name, devices=devices, dtypes=("bfloat16", "float16"))
        out[name] = {"passed": report.passed, "worst": report.worst_ratio, "text": report.format()}
    print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["AVX2", None], ids=["ONEDNN_MAX_CPU_ISA=AVX2", "default-isa"])
def test_low_precision_checks_hold_on_each_onednn_isa(isa):
    """bfloat16 and float16 checks of every cheap built-in in a fresh interpreter with oneDNN's ISA capped or not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    spec = {name: BUILTINS[name]["devices"] for name in CHEAP}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOW_PRECISION), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == set(CHEAP)
    failed = {name: r["text"] for name, r in results.items() if not r["passed"]}
    assert not failed, "\n".join(failed.values())
    assert all(r["worst"] < 1 for r in results.values())
