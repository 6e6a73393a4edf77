"""The whole decoder step under ``torch.compile``: what the ``compiled`` backend runs, and the bench's
compiled no-attention baseline (so that a compiled backend is compared with a baseline compiled the same way).
"""

from __future__ import annotations

from typing import Any

import torch

from ._contract import StepFn

RECOMPILE_LIMIT = 64
"""Compiled variants of the one decoder-step code object a process may hold (dynamo's default is 8)."""


def compile_decoder_step(decoder: Any) -> StepFn:
    """``decoder.cell_step`` (the RNN written as cell arithmetic) compiled as one graph, ``fullgraph=True``.

    dynamo leaves ``nn.LSTM``/``nn.GRU``/``nn.RNN`` to eager unless ``allow_rnn`` is set, and with it the
    fused cuDNN op failed to trace on an H200 (torch 2.11), so the cell-arithmetic form is compiled;
    ``allow_rnn`` lets dynamo hold the RNN module whose weights it reads. Default mode on every device:
    reduce-overhead's CUDA graphs cannot hold a decode loop whose step outputs feed the next step and wait
    for backward; quatrain's TrainStep captures the whole train step in one CUDA graph instead.
    """
    compiled = torch.compile(decoder.cell_step, fullgraph=True)

    def run(inp: Any, state: Any, attn_state: Any, position: Any, need_weights: bool = False) -> Any:
        # dynamo keys its cache on the code object, which every decoder (and the bench's compiled baseline)
        # shares; each of train/eval, grad/no-grad, dtype and device is one more entry, and the default limit
        # of 8 was hit on the H200 ('inference: compiled' failed with FailOnRecompileLimitHit after the compiled
        # baseline's entries: benchmarks/h200-2026-12-02/shakeout/; with 64 it ran: ../cuda-seed-fp32-b32.md).
        with torch._dynamo.config.patch(allow_rnn=True, recompile_limit=RECOMPILE_LIMIT):
            return compiled(inp, state, attn_state, position, need_weights)

    return run
