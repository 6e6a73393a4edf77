"""Where a CPU step's time goes: torch.profiler's top operators for the seed preset, batch 32 x 50, one thread.

Usage: OMP_NUM_THREADS=1 python benchmarks/profile_cpu.py MODE VARIANTS, MODE a teacher forcing (0.9: the
sequential train step) or 'infer'; VARIANTS comma-separated ('none' is the no-attention model). Prints the
process's CPU time of one step, then the operators by self CPU time. Profiled times on a shared machine are
wall-clock and inflated by other jobs; the operator counts and their shares are what to read.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import quatrain
from quatrain.registry._probe import make_batch


def main(mode: str, variants: str) -> None:
    torch.set_num_threads(1)
    config = quatrain.ModelConfig.preset("seed")
    x, mask = make_batch(config, 32, torch.device("cpu"), torch.float32)
    for name in variants.split(","):
        torch.manual_seed(0)
        none = name == "none"
        model = quatrain.Autoencoder(config.evolve(attention="none") if none else config, None if none else name)
        step: quatrain.TrainStep | quatrain.InferenceStep
        if mode == "infer":
            step = quatrain.InferenceStep(model)
        else:
            step = quatrain.TrainStep(model, teacher_forcing=float(mode))
        step(x, mask)
        t0 = time.process_time()
        torch.manual_seed(5)
        step(x, mask)
        cpu = time.process_time() - t0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            torch.manual_seed(5)
            step(x, mask)
        print(f"## {name}, mode {mode}: {cpu * 1000:.0f} ms CPU time (1 thread)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=44))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
