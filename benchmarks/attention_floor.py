"""The floor under what attention adds to a step, set against what a bar of issue 13 allows it.

For each mode of a ``quatrain bench`` JSON (train tf 0.9, train tf 1.0, inference), this runs one step of the
no-attention baseline and of each backend named, at the bench's preset and batch size, on this machine's CPU
by ``torch.utils.flop_counter``'s formulas (with CPU's fused attention and RNN layer added), and takes the
difference: the arithmetic attention adds. Then:

- FLOP floor: that arithmetic at the device's float32 rate. At 'fp32' a GPU runs the added products (linear
  layers, attention's products) as IEEE float32 on its SIMT cores: the default here is that rate as a large
  product reaches it on the card (``--ceilings cuda`` measures it).
- byte floor: K and V read at every attention call of a decode (``kv_reads``: a sequential train step's
  backward reads them again), at the device's bandwidth, where K and V together outgrow its L2 cache (else
  nothing: they may stay cached between steps).
- floor: the larger of the two. It assumes attention's work cannot hide under the baseline's; where a step is
  latency-bound (batch 32 on a GPU) it could, so there the floor is a reference, not a proof.

Set against: the baseline's median from the JSON, the bar's ratio (issue 13), the extra time the bar allows,
and the extra time the bench measured (the mode's best eager backend minus the baseline).

    python benchmarks/attention_floor.py benchmarks/gpu-2026-12-07/run9/cuda-seed-fp32-b256.json [...]

The counts run on CPU with the decoder's 'steps' engine where the JSON is from CUDA (what CUDA runs), the
backends through their CPU paths: ``triton-step``'s is ``deferred-kv``'s matmul path, the same products.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

import quatrain
from quatrain._precision import tf32_allowed
from quatrain.registry import detect_hardware, get_registry
from quatrain.registry._measure import MODE_TITLES, TEACHER_FORCING
from quatrain.registry._probe import build_variants, make_batch

BARS = {  # issue 13's bars: (device, precision, batch size) -> mode -> the most x the no-attention baseline
    ("cuda", "fp32", 32): {"train-seq": 1.10, "train-par": 1.05, "infer": 1.15},
    ("cuda", "fp32", 256): {"train-seq": 1.25, "train-par": 1.15, "infer": 1.30},
    ("cuda", "bf16", 32): {"train-seq": 1.05, "train-par": 1.03},
    ("cpu", "fp32", 32): {"train-seq": 1.10, "infer": 1.10},
}
DEVICES = {  # device name fragment -> (float32 SIMT TFLOP/s, TB/s, L2 MB)
    # Measured (``--ceilings cuda``) on a lent H100, 2026-12-07, benchmarks/gpu-2026-12-07/run10/ceilings.json:
    # an 8192-square IEEE float32 product at 51.0 TFLOP/s (the datasheet says 67) and a 1 GB copy at 2.96 TB/s.
    # The H200 has the H100's arithmetic; its copy bandwidth, 4.3 TB/s, and L2 are the device library's
    # (KINDS.md: measured on lent H200s).
    "H100": (51.0, 2.96, 50.0),
    "H200": (51.0, 4.3, 60.0),
}
MODES = ("train-seq", "train-par", "infer")


def _sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return int(flop_counter.sdpa_flop_count(query, key, value))


def _sdpa_backward(
    grad: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(flop_counter.sdpa_backward_flop_count(grad, query, key, value))


def _rnn_layer(x: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """One RNN layer over a sequence (oneDNN's op on CPU): every step's gate products, 2 (I + H) G H per row."""
    return 2 * math.prod(x[:-1]) * (math.prod(w_ih) + math.prod(w_hh))


def _rnn_layer_backward(x: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Its backward: the gradients of the inputs and of the weights, twice the forward's products."""
    return 2 * _rnn_layer(x, w_ih, w_hh)


def _formulas() -> dict[Any, Any]:
    """The counter's FLOP formulas by op, with CPU's fused attention (the counter has its CUDA kernels') and
    CPU's RNN layer added."""
    formulas = dict(flop_counter.flop_registry)
    ops = {"_scaled_dot_product_flash_attention_for_cpu": _sdpa,
           "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
           "mkldnn_rnn_layer": _rnn_layer, "mkldnn_rnn_layer_backward": _rnn_layer_backward}  # fmt: skip
    for name, f in ops.items():
        if hasattr(torch.ops.aten, name):
            formulas[getattr(torch.ops.aten, name)] = flop_counter.shape_wrapper(f)
    return formulas


class _Counter(TorchDispatchMode):
    """FLOPs per aten op, by the counter's formulas. (``FlopCounterMode`` itself also tracks modules, and its
    tracker fails on the RNN modules a decode runs without autograd.)"""

    def __init__(self) -> None:
        super().__init__()
        self.formulas = _formulas()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            name = func._overloadpacket.__name__
            self.counts[name] = self.counts.get(name, 0) + int(formula(*args, **kwargs, out_val=out))
        return out


def counted(model: quatrain.Autoencoder, mode: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, int]:
    """FLOPs of one step of ``model`` in ``mode``, per aten op (eager, no graph)."""
    from quatrain._trainstep import InferenceStep, TrainStep

    runner: Any = (
        InferenceStep(model) if mode == "infer" else TrainStep(model.train(), teacher_forcing=TEACHER_FORCING[mode])
    )
    with _Counter() as counter:
        runner(x, mask)
    return counter.counts


def ceilings(device: str, threads: int | None = None) -> tuple[float, float, float]:
    """This machine's (IEEE float32 matmul TFLOP/s, copy TB/s counting bytes read and written, L2 MB), each the
    best of five: a square product (8192 on CUDA with TF32 off, 2048 on CPU at ``threads`` threads) and a large
    copy (1 GB on CUDA, 256 MB on CPU). A CPU's L2 is one core's times ``threads``."""
    import time

    dev = torch.device(device)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(threads)
    n = 8192 if dev.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    src = torch.randn((256 if dev.type == "cuda" else 64) << 20, device=dev)
    dst = torch.empty_like(src)

    def best(fn: Any) -> float:
        times = []
        for _ in range(6):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return min(times[1:])  # the first call warms up

    with tf32_allowed(False):  # IEEE float32: the arithmetic attention's products run in at 'fp32'
        mm = best(lambda: a @ b)
    copy = best(lambda: dst.copy_(src))
    if dev.type == "cuda":
        l2_mb = torch.cuda.get_device_properties(dev).L2_cache_size / 2**20
    else:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            l2_mb = (threads or 1) * int(f.read().strip().rstrip("K")) / 1024
    return 2 * n**3 / mm / 1e12, 2 * src.nbytes / copy / 1e12, l2_mb


def rates(report: dict[str, Any], args: argparse.Namespace) -> tuple[tuple[float, float, float], str]:
    """((FLOP/s, bytes/s, L2 bytes), where they come from) for the JSON's device: given, known by its name, or
    measured here (a CPU JSON: this machine should be the one it was run on)."""
    name = report["machine"]["hardware"].get("device_name") or report["setup"]["device"]
    known = next((v for k, v in DEVICES.items() if k in name), None)
    how = "measured ceilings, see DEVICES"
    if known is None and report["setup"]["device"] == "cpu":
        known, how = ceilings("cpu", report["setup"].get("threads") or report["machine"]["threads"]), "measured here"
        here = detect_hardware().device_name  # the registry's probe: on a machine without a GPU, its CPU
        if here != name:
            how += f", on {here}: not the JSON's machine"
    if known is None and None in (args.tflops, args.bandwidth, args.l2_mb):
        raise SystemExit(f"no rates known for {name!r}: give --tflops, --bandwidth and --l2-mb")
    given = (args.tflops, args.bandwidth, args.l2_mb)
    tflops, tbs, l2 = (g if g is not None else k for g, k in zip(given, known or (0.0, 0.0, 0.0), strict=True))
    if report["setup"]["precision"] != "fp32" and args.tflops is None:
        raise SystemExit("the default rate is IEEE float32's; for another precision give --tflops")
    flags = [f for f, g in zip(("--tflops", "--bandwidth", "--l2-mb"), given, strict=True) if g is not None]
    if flags:
        how += "; " + ", ".join(flags) + " as given"
    source = f"{name}: {tflops:.3g} TFLOP/s, {tbs:.3g} TB/s, L2 {l2:g} MB ({how})"
    return (tflops * 1e12, tbs * 1e12, l2 * 1e6), source


def kv_reads(mode: str, steps: int, stretches: bool) -> float:
    """How many times a step reads K and V (expected, under scheduled sampling's coins): once per decoder step
    at inference; in a sequential train step once per attention call forward and once backward, where a call
    is a decoder step ('steps' engine) or, on CPU's 'stretches' engine, a step that reads the model's own
    output or a run of teacher-forced steps (expected runs of T coins at rate p: p + (T - 1) p (1 - p));
    none in the parallel train step (one call)."""
    if mode == "train-par":
        return 0.0
    if mode == "infer":
        return float(steps)
    p = TEACHER_FORCING[mode]
    calls = steps * (1 - p) + p + (steps - 1) * p * (1 - p) if stretches else steps
    return 2.0 * calls


def floor_row(
    mode: str,
    models: dict[str, quatrain.Autoencoder],
    names: list[str],
    x: torch.Tensor,
    mask: torch.Tensor,
    report: dict[str, Any],
    bar: float | None,
    kv_bytes: int,
    ceiling: tuple[float, float, float],
) -> dict[str, Any]:
    """One mode's row: attention's added arithmetic (the least over ``names``), its floor at ``ceiling`` (FLOP/s,
    bytes/s, L2 bytes), what ``bar`` allows and what the bench measured."""
    flops_rate, bandwidth, l2 = ceiling
    setup = report["setup"]
    base = counted(models["none"], mode, x, mask)
    extra = {}
    for name in names:
        ops = counted(models[name], mode, x, mask)
        more = {op: ops.get(op, 0) - base.get(op, 0) for op in {*ops, *base}}
        extra[name] = (sum(more.values()), more)
    counted_with = min(extra, key=lambda n: extra[n][0])
    flops = extra[counted_with][0]
    reads = kv_reads(mode, setup["seq_len"], stretches=setup["device"] == "cpu")
    byte_ms = reads * kv_bytes / bandwidth * 1e3 if kv_bytes > l2 else 0.0
    flop_ms = flops / flops_rate * 1e3
    summary = report["summary"].get(mode, {})
    summary = summary.get("same_way", {}).get("eager", summary)  # against the eager baseline, 'none'
    baseline = next(v["modes"][mode]["median_ms"] for v in report["variants"] if v["name"] == "none")
    base_flops = sum(base.values())
    return {"mode": mode, "baseline_ms": baseline, "bar": bar,
            "allowed_ms": (bar - 1.0) * baseline if bar is not None else math.nan,
            "extra_gflop": flops / 1e9, "counted_with": counted_with, "flop_floor_ms": flop_ms,
            "byte_floor_ms": byte_ms, "floor_ms": max(flop_ms, byte_ms),
            "measured_extra_ms": summary.get("median_ms", math.nan) - baseline,
            "baseline_gflop": base_flops / 1e9,
            "at_baseline_rate_ms": flops / base_flops * baseline,  # attention's work as fast as the baseline's own
            "best": summary.get("best"),
            "extra_gflop_by_backend": {n: e[0] / 1e9 for n, e in extra.items()},
            "ops": extra[counted_with][1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", nargs="?", help="a quatrain bench JSON")
    parser.add_argument(
        "--ceilings", metavar="DEVICE", help="only measure this machine's rates on DEVICE and print them"
    )
    parser.add_argument("--backends", default="deferred-kv,cached-decoder",
                        help="backends counted (the least arithmetic per mode is the floor's)")  # fmt: skip
    parser.add_argument("--tflops", type=float, help="the device's float32 rate (default: by its name)")
    parser.add_argument("--bandwidth", type=float, help="its memory bandwidth, TB/s")
    parser.add_argument("--l2-mb", type=float, help="its L2 cache, MB")
    parser.add_argument("--out", help="write the table as JSON too")
    args = parser.parse_args()
    if args.ceilings:
        tflops, tbs, l2 = ceilings(args.ceilings, torch.get_num_threads())
        name = torch.cuda.get_device_name() if args.ceilings.startswith("cuda") else args.ceilings
        print(
            json.dumps(
                {"device": name, "tflops_fp32": tflops, "copy_tbs": tbs, "l2_mb": l2, "torch": torch.__version__}
            )
        )
        return
    if args.bench is None:
        parser.error("give a bench JSON (or --ceilings DEVICE)")

    try:
        with open(args.bench) as f:
            report = json.load(f)
        setup = report["setup"]
    except (OSError, ValueError, KeyError) as e:
        parser.error(f"{args.bench}: not a readable quatrain bench JSON ({e})")
    # Older JSONs name no precision: their dtype is what ran. K and V are stored in it.
    setup.setdefault("precision", "fp32" if setup["dtype"] == "float32" else setup["dtype"])
    ceiling, source = rates(report, args)
    config = quatrain.ModelConfig(**setup["config"])
    batch, device = setup["batch_size"], setup["device"]
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    torch.manual_seed(0)
    models = build_variants(config, ["none", *names], device=torch.device("cpu"), dtype=torch.float32,
                            registry=get_registry())  # fmt: skip
    if device != "cpu":
        for model in models.values():
            model.decoder.engine = "steps"  # what CUDA runs: every step alike, training replayed
    x, mask = make_batch(config, batch, torch.device("cpu"), torch.float32)
    bars = BARS.get((device, setup["precision"], batch), {})
    element = torch.empty(0, dtype=getattr(torch, setup["dtype"])).element_size()
    kv_bytes = 2 * batch * setup["seq_len"] * config.hidden_size * element  # K and V
    preset = setup.get("preset") or "custom"
    print(f"# {args.bench}: {preset} preset, batch {batch}, {setup['precision']}, {source}")
    where = "over" if kv_bytes > ceiling[2] else "within"
    print(f"# K and V: {kv_bytes / 1e6:.1f} MB ({where} L2); arithmetic counted on this CPU, torch {torch.__version__}")
    rows = [floor_row(mode, models, names, x, mask, report, bars.get(mode), kv_bytes, ceiling) for mode in MODES]
    print(f"\n{'mode':<16}{'baseline':>9}{'bar':>6}{'allowed':>9}{'GFLOP':>8}{'FLOP fl.':>9}{'byte fl.':>9}"
          f"{'floor':>8}{'measured':>9}  floor/allowed")  # fmt: skip
    for r in rows:
        bar_text = f"{r['bar']:.2f}" if r["bar"] is not None else "-"
        share = f"{r['floor_ms'] / r['allowed_ms']:.2f}" if r["bar"] is not None else "-"
        print(f"{MODE_TITLES[r['mode']]:<16}{r['baseline_ms']:9.2f}{bar_text:>6}{r['allowed_ms']:9.2f}{r['extra_gflop']:8.1f}"
              f"{r['flop_floor_ms']:9.2f}{r['byte_floor_ms']:9.2f}{r['floor_ms']:8.2f}{r['measured_extra_ms']:9.2f}"
              f"  {share}")  # fmt: skip
    print("\nms; 'allowed': what the bar lets attention add; 'measured': the bench's best eager variant minus")
    print("its baseline 'none';")
    if device == "cpu":  # on CUDA the baseline's RNN runs on TF32 tensor cores and attention's products do not
        print("at the baseline's own rate (its counted arithmetic over its time), attention's work would add: "
              + ", ".join(f"{MODE_TITLES[r['mode']]} {r['at_baseline_rate_ms']:.1f} ms "
                          f"({r['extra_gflop']:.1f} of {r['baseline_gflop']:.1f} GFLOP)" for r in rows))  # fmt: skip
    print("GFLOP: what attention adds, counted with " + ", ".join(sorted({r["counted_with"] for r in rows}))
          + " (the least of " + ", ".join(names) + ")")  # fmt: skip
    for r in rows:
        top = sorted(((op, n) for op, n in r["ops"].items() if n), key=lambda p: -abs(p[1]))
        print(f"  {MODE_TITLES[r['mode']]}: " + ", ".join(f"{op} {n / 1e9:.1f}" for op, n in top)
              + " GFLOP more")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"bench": args.bench, "rates": source, "kv_mb": kv_bytes / 1e6, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
