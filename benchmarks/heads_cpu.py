"""Attention's cost on CPU at 1, 2, 4 and 8 heads, seed preset, batch 32 x 50 (benchmarks/heads.md).

CPU time of this process (``time.process_time``, one thread), the median of 3 after one warm-up call: the
attention module alone (prepare + 50 single-query steps, forward and backward; and the parallel path), and
the whole cached-decoder model (train step at teacher forcing 0.9, inference) against the no-attention model.
CPU time is less sensitive than wall time to other jobs on a shared machine; `quatrain bench --heads N` on
an idle machine gives the wall-clock figures.  Run: OMP_NUM_THREADS=1 python benchmarks/heads_cpu.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import quatrain
from quatrain.registry._probe import make_batch


def cpu_ms(fn: Callable[[], object], n: int = 3) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return sorted(times)[n // 2] * 1000


def module_ms(attention: quatrain.AttentionBackend, mask: torch.Tensor) -> tuple[float, float]:
    memory = torch.randn(32, 50, 512, requires_grad=True)
    queries = torch.randn(32, 50, 512, requires_grad=True)

    def steps() -> None:
        state = attention.prepare(memory, mask)
        sum(attention.step(queries[:, t], state)[0].sum() for t in range(50)).backward()

    def parallel() -> None:
        attention.parallel(queries, attention.prepare(memory, mask))[0].sum().backward()

    return cpu_ms(steps), cpu_ms(parallel)


def model_ms(config: quatrain.ModelConfig, backend: str | None, x: torch.Tensor, mask: torch.Tensor) -> str:
    torch.manual_seed(0)
    train = quatrain.TrainStep(quatrain.Autoencoder(config, backend), teacher_forcing=0.9)
    infer = quatrain.InferenceStep(quatrain.Autoencoder(config, backend))
    return f"train tf0.9 {cpu_ms(lambda: train(x, mask)):.0f} ms, infer {cpu_ms(lambda: infer(x, mask)):.0f} ms"


def main() -> None:
    torch.set_num_threads(1)
    base = quatrain.ModelConfig.preset("seed")
    x, mask = make_batch(base, 32, torch.device("cpu"), torch.float32)
    print(f"none: {model_ms(base.evolve(attention='none'), None, x, mask)}", flush=True)
    for heads in (1, 2, 4, 8):
        config = base.evolve(num_heads=heads)
        for name in ("cached-decoder", "naive"):
            torch.manual_seed(0)
            steps, parallel = module_ms(quatrain.Autoencoder(config, name).decoder.attention, mask)
            print(
                f"heads {heads} {name}: attention module 50 steps fwd+bwd {steps:.0f} ms, "
                f"parallel fwd+bwd {parallel:.0f} ms",
                flush=True,
            )
        print(f"heads {heads} cached-decoder model: {model_ms(config, 'cached-decoder', x, mask)}", flush=True)


if __name__ == "__main__":
    main()
