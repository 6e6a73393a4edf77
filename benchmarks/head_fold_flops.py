"""The head fold's arithmetic: the matrix-product FLOPs of one seed-preset train step (forward and backward,
batch 32 x 50, CPU) with ``Decoder.fold_head`` on and off, by ``torch.utils.flop_counter.FlopCounterMode``.
The counter sees the products autograd dispatches, not the fused RNN ops (the LSTMs, most of a step), so the
totals are the step's products outside its RNNs; their difference is what the fold removes.

    python benchmarks/head_fold_flops.py
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

import quatrain


def main() -> None:
    for backend in (None, "cached-decoder"):
        config = quatrain.ModelConfig.preset("seed", attention="none" if backend is None else "encoder")
        torch.manual_seed(0)
        folded = quatrain.Autoencoder(config, backend)
        unfolded = copy.deepcopy(folded)
        unfolded.decoder.fold_head = False
        x, mask = torch.randn(32, config.max_len, config.embed_dim), torch.ones(32, config.max_len, dtype=torch.bool)
        for teacher_forcing in (1.0, 0.9):
            counts = []
            for model in (folded, unfolded):
                torch.manual_seed(1)  # the same coins
                with FlopCounterMode(display=False) as counter:
                    model(x, mask, teacher_forcing=teacher_forcing).reconstruction.square().sum().backward()
                counts.append(counter.get_total_flops() / 1e9)
            print(
                f"{backend or 'none'}, train tf {teacher_forcing}: {counts[0]:.2f} GFLOP folded, "
                f"{counts[1]:.2f} unfolded ({counts[1] - counts[0]:.2f} fewer)"
            )


if __name__ == "__main__":
    main()
