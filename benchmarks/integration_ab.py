"""triton-step's integration layer, A/B: the folded integration layer's first map computed with the step
(``TritonStepAttention.step_integrated``: one product ``query @ [w_q; W_query]^T``, the kernel, the context
half's product added in place) against the form before it (the projection, the kernel writing ``[query |
contexts]``, then one product over that doubled input), beside the no-attention baseline. Same weights, same
engine (``registry._measure.measure``: TrainStep / InferenceStep, CUDA graphs on a GPU), one process,
interleaved rounds; median ms per step of each round, then the median over rounds. A fourth variant adds the
context half's product out of place (``torch.addmm`` into a new tensor) instead of in place.

    python benchmarks/integration_ab.py --device cuda --batch-sizes 32,256 [--precision bf16] [--out ab.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import types
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--modes", default="train-seq,infer")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    import quatrain
    from quatrain.registry import get_registry
    from quatrain.registry._measure import measure
    from quatrain.plugins import triton_step
    from quatrain.registry._probe import build_variants, make_batch

    def joined(self: Any, query: Any, state: Any, weight: Any, bias: Any, linear: Any = F.linear) -> Any:
        """The previous form: the kernel's ``[query | contexts]``, then the layer over that doubled input."""
        if not state.kernel:
            return type(self).step_integrated(self, query, state, weight, bias, linear)
        return linear(self._step(query, state, None), weight, bias)

    in_place = triton_step._add_context

    def out_of_place(share: Any, contexts: Any, weight: Any) -> Any:
        """The context half's product into a new, contiguous tensor (cuBLAS reads the share as its C)."""
        return torch.addmm(share, contexts, weight.t())

    device = torch.device(args.device)
    config = quatrain.ModelConfig.preset("seed")
    results: dict[str, Any] = {"device": args.device, "precision": args.precision, "torch": torch.__version__}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        names = ["none", "triton-step", "triton-step (joined)", "triton-step (out of place)"]
        models = build_variants(config, names[:2], device=device, dtype=torch.float32, registry=get_registry())
        models[names[2]], models[names[3]] = (copy.deepcopy(models["triton-step"]) for _ in range(2))
        attention = models[names[2]].decoder.attention
        attention.step_integrated = types.MethodType(joined, attention)  # this instance only
        x, mask = make_batch(config, batch, device, torch.float32)
        for mode in args.modes.split(","):
            rounds: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.rounds):
                for name in names:
                    triton_step._add_context = out_of_place if name == names[3] else in_place  # its capture only
                    timing = measure(
                        models[name],
                        mode,
                        x,
                        mask,
                        iters=args.iters,
                        warmup=4,
                        cuda_graph=device.type == "cuda",
                        precision=args.precision,
                    )
                    triton_step._add_context = in_place
                    rounds[name].append(timing.median_ms)
            medians = {n: statistics.median(t) for n, t in rounds.items()}
            base = medians["none"]
            results[f"b{batch} {mode}"] = {"median_ms": medians, "rounds_ms": rounds}
            print(
                f"batch {batch} {mode}: "
                + ", ".join(f"{n} {ms:.2f} ms ({ms / base:.3f}x)" for n, ms in medians.items())
                + f"; joined / stacked {medians[names[2]] / medians[names[1]]:.3f}"
                + f", out of place / in place {medians[names[3]] / medians[names[1]]:.3f}",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
