"""The margins of the one comparison rule: every built-in backend x dtype x rnn kind over seeds, on two oneDNN ISAs.

For each cell it runs the conformance kit (``quatrain.testing.check_backend``, CPU, one dtype, one RNN kind)
once per seed and reports the worst ``err(backend) / bound`` over every check and quantity of the cell
(below 1 passes; the closer to 0, the more room). oneDNN reads ``ONEDNN_MAX_CPU_ISA`` at start-up, so each
ISA setting runs in its own interpreter. Built-in backends come from the registry (the ``quatrain``
distribution's entry points); ``mps`` is tested with ``devices=("cpu",)``; ``compiled`` (a cold
``torch.compile`` per RNN kind and dtype, in its own interpreter) runs fewer seeds, as the table says.

    python scripts/conformance_margins.py -o benchmarks/conformance-margins.md            # 20 seeds
    python scripts/conformance_margins.py --seeds 2 --compiled-seeds 1 -o /tmp/m.md       # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ISAS = {"AVX2": "AVX2", "default": None}
DTYPES = ("float32", "bfloat16", "float16")
KINDS = ("lstm", "gru", "rnn")
EXPENSIVE = {"compiled"}
"""Backends whose cells each pay a cold compile: one interpreter per (dtype, kind), fewer seeds."""


def builtin_backends() -> list[str]:
    from quatrain.registry import get_registry

    return sorted(name for name, e in get_registry().backends.items() if e.distribution == "quatrain")


def worker(backends: list[str], dtypes: list[str], kinds: list[str], seeds: int) -> list[dict[str, Any]]:
    """One cell per (backend, dtype, kind): the worst ratio over seeds, and where it was."""
    import torch

    from quatrain.registry import get_registry
    from quatrain.testing import check_backend

    torch.set_num_threads(1)
    registry = get_registry()
    rows = []
    for name in backends:
        for dtype in dtypes:
            for kind in kinds:
                worst: dict[str, Any] = {"ratio": -1.0}
                needed: dict[str, float] = {}  # kind -> the smallest k that would pass every quantity of that kind
                failed = 0
                started = time.perf_counter()
                for seed in range(seeds):
                    report = check_backend(
                        name, rnn_kinds=(kind,), dtypes=(dtype,), devices=("cpu",), seed=seed, registry=registry
                    )
                    failed += not report.passed
                    for check in report.checks:
                        for q in check.comparison.quantities if check.comparison else ():
                            if q.ref_err > 0 and q.err > q.floor + q.allowance:
                                k = (q.err - q.floor - q.allowance) / q.ref_err
                                needed[q.kind] = max(needed.get(q.kind, 0.0), k)
                        ratio = float("inf") if check.ratio is None else check.ratio
                        if ratio > worst["ratio"]:
                            where = check.comparison.worst.name if check.comparison and check.comparison.worst else ""
                            worst = {"ratio": ratio, "seed": seed, "check": check.name, "quantity": where}
                rows.append(
                    {
                        "backend": name,
                        "dtype": dtype,
                        "kind": kind,
                        "seeds": seeds,
                        "failed_seeds": failed,
                        "seconds": round(time.perf_counter() - started, 1),
                        "k_needed": needed,
                        **worst,
                    }
                )
                print(f"  {name} {dtype} {kind}: worst {worst['ratio']:.2f}", file=sys.stderr, flush=True)
    return rows


def run_isa(isa: str, backends: list[str], seeds: int, compiled_seeds: int) -> list[dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if ISAS[isa]:
        env["ONEDNN_MAX_CPU_ISA"] = ISAS[isa]
    jobs = [([b for b in backends if b not in EXPENSIVE], list(DTYPES), list(KINDS), seeds)]
    jobs += [([b], [d], [k], compiled_seeds) for b in backends if b in EXPENSIVE for d in DTYPES for k in KINDS]
    rows: list[dict[str, Any]] = []
    for names, dtypes, kinds, n in jobs:
        if not names or n < 1:
            continue
        print(f"{isa}: {', '.join(names)} {'/'.join(dtypes)} {'/'.join(kinds)} x {n} seeds", file=sys.stderr)
        spec = json.dumps({"backends": names, "dtypes": dtypes, "kinds": kinds, "seeds": n})
        done = subprocess.run(
            [sys.executable, __file__, "--worker", spec], env=env, capture_output=True, text=True, check=False
        )
        sys.stderr.write(done.stderr)
        if done.returncode:
            raise SystemExit(f"worker failed ({isa}, {names}): exit {done.returncode}")
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def machine() -> dict[str, str]:
    import torch

    model, flags = platform.processor() or "unknown", ""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            if key.strip() == "Flags":
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "avx512_vnni", "fma")
                flags = " ".join(f for f in value.split() if f in wanted)
    except OSError:
        pass
    return {
        "cpu": model,
        "isa flags": flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def table(results: dict[str, list[dict[str, Any]]], info: dict[str, str], seeds: int, compiled_seeds: int) -> str:
    from quatrain._compare import K

    lines = [
        "# Conformance margins: worst err(backend) / bound over seeds, two oneDNN ISAs",
        "",
        "Generated by `python scripts/conformance_margins.py -o benchmarks/conformance-margins.md` "
        "(the kit on CPU, one thread; the machine was shared with other jobs, which changes no number here).",
        "",
        "The rule (core/_compare.py): `err(backend) <= k * err(naive in dtype) + floor`, err = max-abs against naive "
        "in float64; k: " + ", ".join(f"{kind} {k:g}" for kind, k in K.items()) + ". A ratio below 1 passes.",
        f"Each cell is the worst over {seeds} seeds (compiled: {compiled_seeds}, a cold compile per cell) of every "
        "check of the kit for that dtype and RNN kind (module checks, sequential and parallel decode, repeats).",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
    ]
    isas = list(results)
    lines.append("| backend | dtype | rnn | " + " | ".join(f"{i}: worst (where)" for i in isas) + " |")
    lines.append("|---|---|---|" + "---|" * len(isas))
    keyed = {isa: {(r["backend"], r["dtype"], r["kind"]): r for r in rows} for isa, rows in results.items()}
    overall = dict.fromkeys(isas, 0.0)
    for key in sorted(keyed[isas[0]]):
        cells = []
        for isa in isas:
            r = keyed[isa].get(key)
            if r is None:
                cells.append("-")
                continue
            overall[isa] = max(overall[isa], r["ratio"])
            mark = f" **{r['failed_seeds']} failed**" if r["failed_seeds"] else ""
            cells.append(f"{r['ratio']:.2f} ({r['check']}, {r['quantity']}, seed {r['seed']}){mark}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    lines += ["", "Worst over every cell: " + ", ".join(f"{isa} {overall[isa]:.2f}" for isa in isas) + "."]
    lines += ["", "The smallest k each kind of quantity would have needed (over every cell, seed and quantity; a", ""]
    lines[-2] += " quantity within its floor needs none):"
    lines += [
        "| kind | k | " + " | ".join(f"{isa}: k needed (where)" for isa in isas) + " |",
        "|---|---|" + "---|" * len(isas),
    ]
    for kind, k in K.items():
        cells = []
        for isa in isas:
            rows = [r for r in results[isa] if kind in r["k_needed"]]
            if not rows:
                cells.append("none")
                continue
            top = max(rows, key=lambda r: r["k_needed"][kind])
            cells.append(f"{top['k_needed'][kind]:.1f} ({top['backend']} {top['dtype']} {top['kind']})")
        lines.append(f"| {kind} | {k:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--compiled-seeds", type=int, default=2)
    parser.add_argument("--backends", nargs="*", help="default: every built-in backend")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/conformance-margins.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["backends"], spec["dtypes"], spec["kinds"], spec["seeds"])))
        return
    backends = args.backends or builtin_backends()
    results = {isa: run_isa(isa, backends, args.seeds, args.compiled_seeds) for isa in ISAS}
    args.output.write_text(table(results, machine(), args.seeds, args.compiled_seeds), encoding="utf-8")
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
