"""Two CPU levers for issue 13, each against the shipped form, interleaved call by call (seed preset, batch 32):

- ``stretches``: ``deferred-kv``'s teacher-forced stretches by the single-query matmul path (``_SingleQuery``,
  K and V gradients deferred to the one product after the last step) instead of SDPA, whose backward writes a
  full-size dK and dV per stretch (zero-filled, then added). Train step at teacher forcing 0.9.
- ``k-major``: every 2-D linear layer of an inference decode multiplies by a K-major copy of its weight, made
  once per weight (``x @ W^T`` as MKL's NN product, not NT), against ``F.linear``. The baseline and
  ``cached-decoder``.

Neither ships: this script is the record of what they measured (``benchmarks/cpu-levers-ab.txt``).

    python benchmarks/cpu_levers_ab.py [--threads 2] [--rounds 10] [--levers stretches,k-major]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

import quatrain
from quatrain.plugins import deferred_kv
from quatrain.plugins._attention import merge_heads, split_heads
from quatrain.registry._probe import make_batch

_SHIPPED_PARALLEL_CONTEXT = deferred_kv.DeferredKVAttention.parallel_context
_LINEAR = F.linear


def _matmul_parallel_context(
    self: deferred_kv.DeferredKVAttention, queries: Tensor, state: deferred_kv.DeferredKeys
) -> Tensor:
    q = split_heads(self.w_q(queries), self.num_heads)  # (B, h, T, d): _SingleQuery takes any number of queries
    return merge_heads(deferred_kv._SingleQuery.apply(q, state.k_t, state.v, state.bias, state.records))


def _k_major_linear() -> Callable[..., Tensor]:
    copies: dict[int, tuple[Tensor, Tensor]] = {}

    def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if torch.is_grad_enabled() or x.dim() != 2:
            return _LINEAR(x, weight, bias)
        entry = copies.get(id(weight))
        if entry is None or entry[0] is not weight:
            entry = copies[id(weight)] = (weight, weight.t().contiguous())
        return torch.addmm(bias, x, entry[1]) if bias is not None else x @ entry[1]

    return linear


@contextmanager
def _lever(name: str, on: bool) -> Iterator[None]:
    try:
        if on and name == "stretches":
            deferred_kv.DeferredKVAttention.parallel_context = _matmul_parallel_context  # type: ignore[method-assign]
        if on and name == "k-major":
            F.linear = _k_major_linear()
        yield
    finally:
        deferred_kv.DeferredKVAttention.parallel_context = _SHIPPED_PARALLEL_CONTEXT  # type: ignore[method-assign]
        F.linear = _LINEAR


def _step(config: quatrain.ModelConfig, name: str, infer: bool) -> quatrain.TrainStep | quatrain.InferenceStep:
    torch.manual_seed(0)
    none = name == "none"
    model = quatrain.Autoencoder(config.evolve(attention="none") if none else config, None if none else name)
    return quatrain.InferenceStep(model) if infer else quatrain.TrainStep(model, teacher_forcing=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per form, after one warm-up each")
    parser.add_argument("--levers", default="stretches,k-major")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = quatrain.ModelConfig.preset("seed")
    x, mask = make_batch(config, 32, torch.device("cpu"), torch.float32)
    plan = {"stretches": [("deferred-kv", False)], "k-major": [("none", True), ("cached-decoder", True)]}
    print(f"# {__file__.rsplit('/', 1)[-1]}: torch {torch.__version__}, {args.threads} threads, seed preset, "
          f"batch 32, median of {args.rounds} calls per form, the two forms alternating")  # fmt: skip
    for lever in args.levers.split(","):
        for name, infer in plan[lever]:
            steps = {on: _step(config, name, infer) for on in (False, True)}
            times: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(args.rounds + 1):
                for on, step in steps.items():
                    with _lever(lever, on):
                        torch.manual_seed(round_)  # both forms meet the same coins
                        start = time.perf_counter()
                        step(x, mask)
                        if round_:
                            times[on].append((time.perf_counter() - start) * 1000)
            shipped, trial = (statistics.median(times[on]) for on in (False, True))
            mode = "inference" if infer else "train tf 0.9"
            print(f"{lever:10s} {name:15s} {mode:13s} shipped {shipped:7.1f} ms  lever {trial:7.1f} ms  "
                  f"lever/shipped {trial / shipped:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
