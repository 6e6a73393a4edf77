"""triton-step's kernels launch by launch, then the whole step with the fastest (issue 13; CUDA only).

Part 1 times one decoder step's attention kernels at the seed preset's shape (4 heads of 128, 50 keys, K and
V read as views of the K/V projection, as the backend reads them) for each launch in ``--launches``: the
forward without and with training outputs, and the backward. Each is replayed from a CUDA graph of
``--repeat`` calls, the launches interleaved in each of ``--rounds`` rounds; µs per call, median over rounds.

Part 2 (unless ``--launches-only``) times ``triton-step``'s whole step through the jobs' engine
(``registry._measure.measure``: TrainStep and InferenceStep, graphed) with the kernels' default launch and
with each batch size's fastest from part 1 (forward with training outputs plus backward for the train modes,
forward alone for inference), same weights, interleaved rounds; the no-attention baseline runs beside them.
A launch is ``BLOCK_D:WARPS:PREFETCH`` (``plugins/_triton_kernels.Launch``), or ``default``.

    python benchmarks/kernel_ab.py --batch-sizes 32,256 --out kernel-ab.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

LAUNCHES = "default,128:4:0,128:4:1,128:8:0,128:8:1,128:2:1,128:16:1,64:4:0,32:4:0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--preset", default="seed", help="the model whose shapes are timed")
    parser.add_argument("--device", default="cuda", help="cpu only under TRITON_INTERPRET=1: a dry run, untimed")
    parser.add_argument("--launches", default=LAUNCHES)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="K and V's storage")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=20, help="steps per round in part 2")
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument("--launches-only", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain.plugins import _triton_kernels as kernels

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    config = quatrain.ModelConfig.preset(args.preset)
    device = torch.device(args.device)
    h, S = config.num_heads, config.max_len
    d = config.hidden_size // h
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (a dry run)"
    results: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "preset": args.preset, "dtype": args.dtype}
    launches = {name: parse(name, kernels, S, d) for name in args.launches.split(",")}
    best: dict[int, dict[str, str]] = {}
    for B in (int(b) for b in args.batch_sizes.split(",")):
        torch.manual_seed(0)
        H = h * d
        kv = torch.randn(B, S, 2 * H, device=device, dtype=dtype)
        k, v = (t.view(B, S, h, d).transpose(1, 2) for t in kv.chunk(2, dim=-1))
        x, q = torch.randn(B, H, device=device, dtype=dtype), torch.randn(B, H, device=device, dtype=dtype)
        bias = torch.zeros(B, S, device=device, dtype=dtype)
        dj = torch.randn(B, 2 * H, device=device, dtype=dtype)
        _, p, _ = kernels.forward(x, q, k, v, bias, True)
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for name, how in launches.items():
            calls.update(kernel_calls(kernels, name, how, (x, q, k, v, bias, dj, p)))
        us = time_calls(calls, args.repeat, args.rounds) if device.type == "cuda" else dry_run(calls)
        parts = ("forward", "forward, training", "backward")
        table = {name: {part: us[name, part] for part in parts} for name in launches}
        results[f"b{B} kernels us"] = table
        print(f"## batch {B}, {args.dtype}: µs per call, median of {args.rounds} rounds of {args.repeat} graphed calls")
        print(f"{'launch':>10} {'forward':>9} {'fwd+train':>9} {'backward':>9} {'train':>9}")
        for name, row in table.items():
            cells = [row[part] for part in parts] + [row["forward, training"] + row["backward"]]
            print(f"{name:>10} " + " ".join(f"{us:9.2f}" for us in cells))
        best[B] = {
            "infer": min(table, key=lambda n: table[n]["forward"]),
            "train": min(table, key=lambda n: table[n]["forward, training"] + table[n]["backward"]),
        }
        print(f"fastest: inference {best[B]['infer']}, training {best[B]['train']}", flush=True)
    results["fastest"] = {str(b): v for b, v in best.items()}
    if not args.launches_only:
        results["steps"] = whole_steps(best, launches, kernels, config, device, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


def kernel_calls(kernels: Any, name: str, how: Any, tensors: tuple[Any, ...]) -> dict[tuple[str, str], Any]:
    """The three calls timed for one launch."""
    x, q, k, v, bias, dj, p = tensors
    return {
        (name, "forward"): lambda: kernels.forward(x, q, k, v, bias, False, how),
        (name, "forward, training"): lambda: kernels.forward(x, q, k, v, bias, True, how),
        (name, "backward"): lambda: kernels.backward(dj, p, k, v, how),
    }


def parse(name: str, kernels: Any, num_keys: int, head_dim: int) -> Any:
    if name == "default":
        return kernels.launch(num_keys, head_dim)
    block_d, warps, prefetch = (int(part) for part in name.split(":"))
    return kernels.Launch(block_d, warps, bool(prefetch))


def time_calls(calls: dict[Any, Callable[[], Any]], repeat: int, rounds: int) -> dict[Any, float]:
    """µs per call of each, replayed from one CUDA graph of ``repeat`` calls; interleaved rounds, median."""
    from _graphs import interleaved  # benchmarks/ is on a script's path

    return interleaved(calls, rounds=rounds, repeat=repeat, untimed_replay=True)


def dry_run(calls: dict[Any, Callable[[], Any]]) -> dict[Any, float]:
    """Each call once, untimed (the interpreter's speed means nothing): every key gets 0."""
    for call in calls.values():
        call()
    return dict.fromkeys(calls, 0.0)


def whole_steps(
    best: dict[int, dict[str, str]], launches: dict[str, Any], kernels: Any, config: Any, device: Any, args: Any
) -> dict[str, Any]:
    """triton-step's graphed steps with the default launch and with the fastest, beside the baseline."""
    import torch

    from quatrain.registry import get_registry
    from quatrain.registry._measure import measure
    from quatrain.registry._probe import build_variants, make_batch

    shipped = kernels.launch
    out: dict[str, Any] = {}
    try:
        for B, fastest in best.items():
            names = ["none", "triton-step"]
            models = build_variants(config, names, device=device, dtype=torch.float32, registry=get_registry())
            x, mask = make_batch(config, B, device, torch.float32)
            for mode, part in (("train-seq", "train"), ("infer", "infer")):
                variants = {"none": ("none", None), "triton-step default": ("triton-step", None)}
                if fastest[part] != "default":
                    variants[f"triton-step {fastest[part]}"] = ("triton-step", launches[fastest[part]])
                rounds: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(args.step_rounds):
                    for name, (model, how) in variants.items():
                        kernels.launch = shipped if how is None else (lambda num_keys, head_dim, how=how: how)
                        timing = measure(
                            models[model], mode, x, mask, iters=args.iters, warmup=4, cuda_graph=device.type == "cuda"
                        )
                        rounds[name].append(timing.median_ms)
                kernels.launch = shipped
                medians = {name: statistics.median(t) for name, t in rounds.items()}
                out[f"b{B} {mode}"] = {"median_ms": medians, "rounds_ms": rounds}
                print(f"batch {B} {mode}: " + "; ".join(
                    f"{name} {ms:.3f} ms ({ms / medians['none']:.3f}x none)" for name, ms in medians.items()
                ), flush=True)  # fmt: skip
    finally:
        kernels.launch = shipped
    return out


if __name__ == "__main__":
    main()
