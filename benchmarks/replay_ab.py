"""A decoder switch, A/B: the same model as shipped against a copy with one ``Decoder`` attribute set
(``--switch``), for the no-attention baseline and the given backends. Same weights, same engine
(``registry._measure.measure``: TrainStep, CUDA graphs on a GPU), one process, interleaved rounds; median ms
of each round's steps, then the median over rounds.

The default switch, ``step_form=steps``: ``Decoder.step_form`` 'replay' (the RNN's steps through DecodeRNN
without autograd, the input projection folded into its first layer; a training decode then replayed as one
differentiated parallel pass: core/_replay.py) against 'steps' (``Decoder.step`` as written, autograd through
every step: the form before it). ``fold_head=false``: the integration MLP's last layer and the output layer
as two maps, not one (``Decoder.fold``).

    python benchmarks/replay_ab.py --device cuda --batch-sizes 32,256 [--precision bf16] [--out ab.json]
    python benchmarks/replay_ab.py --switch fold_head=false --modes train-seq,train-par,infer
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--backends", default="triton-step")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switch", default="step_form=steps", help="ATTR=VALUE set on the copy's Decoder")
    parser.add_argument("--modes", default="train-seq,infer", help="of train-seq, train-par, infer")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    attr, _, raw = args.switch.partition("=")
    value: Any = {"true": True, "false": False}.get(raw.lower(), raw)
    labels = {"train-seq": "train tf 0.9", "train-par": "train tf 1.0", "infer": "inference"}

    import torch

    import quatrain
    from quatrain.registry import get_registry
    from quatrain.registry._measure import measure
    from quatrain.registry._probe import build_variants, make_batch

    device = torch.device(args.device)
    config = quatrain.ModelConfig.preset("seed")
    results: dict[str, Any] = {
        "device": args.device,
        "precision": args.precision,
        "torch": torch.__version__,
        "switch": args.switch,
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    backends = ["none", *args.backends.split(",")]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        models = build_variants(config, backends, device=device, dtype=torch.float32, registry=get_registry())
        for name in backends:
            if not hasattr(models[name].decoder, attr):
                raise SystemExit(f"Decoder has no attribute {attr!r} to switch")
            before = models[f"{name} ({args.switch})"] = copy.deepcopy(models[name])
            setattr(before.decoder, attr, value)
            for module in before.modules():  # as the bench's models: each RNN's weights in one chunk for cuDNN
                if isinstance(module, torch.nn.RNNBase):
                    module.flatten_parameters()
        x, mask = make_batch(config, batch, device, torch.float32)
        for mode in args.modes.split(","):
            rounds: dict[str, list[float]] = {n: [] for n in models}
            for _ in range(args.rounds):
                for name, model in models.items():
                    timing = measure(
                        model,
                        mode,
                        x,
                        mask,
                        iters=args.iters,
                        warmup=4,
                        cuda_graph=device.type == "cuda",
                        precision=args.precision,
                    )
                    rounds[name].append(timing.median_ms)
            medians = {n: statistics.median(t) for n, t in rounds.items()}
            results[f"b{batch} {mode}"] = {"median_ms": medians, "rounds_ms": rounds}
            line = []
            for name in backends:
                new, old = medians[name], medians[f"{name} ({args.switch})"]
                line.append(f"{name} {new:.2f} ms ({args.switch} {old:.2f}, {old / new:.3f}x)")
            for name in backends[1:]:
                line.append(
                    f"{name} / none {medians[name] / medians['none']:.3f} "
                    f"({args.switch} {medians[f'{name} ({args.switch})'] / medians[f'none ({args.switch})']:.3f})"
                )
            print(f"batch {batch} {labels[mode]}, {args.precision}: " + "; ".join(line), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
