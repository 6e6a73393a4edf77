"""``compiled``: the cached decoder, with the whole decoder step under ``torch.compile``.

``wrap_step`` compiles the decoder step (RNN cell, dropout, position, attention, integration MLP and
output projection) as one graph, ``fullgraph=True`` so a graph break is an error rather than a silent
eager fallback. It compiles ``Decoder.cell_step``, the same step with the RNN layers written as cell
arithmetic: dynamo leaves ``nn.LSTM``/``nn.GRU``/``nn.RNN`` to eager unless ``allow_rnn`` is set, and with
it the fused cuDNN op failed to trace on an H200 (torch 2.11: "Unsupported: Observed exception",
benchmarks/h200-seed-fp32.json). ``allow_rnn`` is still set, so that dynamo may hold the RNN module whose
weights the cell arithmetic reads. The mode is the default one (inductor kernels) on every device; on
CUDA, quatrain's TrainStep captures the whole train step, compiled kernels included, in one CUDA graph.
The parallel path
(teacher forcing 1.0) is the cached decoder's, uncompiled: it is one RNN call and one attention call.
tests/plugins/test_compiled.py counts the graphs and breaks.
"""

from __future__ import annotations

from typing import Any

import torch

from quatrain import Capabilities, Hardware, Reason, hookimpl
from quatrain._compile import compile_decoder_step
from quatrain._contract import StepFn

from ._attention import SDPA_KERNEL_NOTES
from .cached_decoder import CachedDecoderAttention

# Cold compile of the decoder step (cell arithmetic), forward and backward, measured with
# `TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python benchmarks/cold_compile.py PRESET` on this project's idle 2-core
# CPU machine, torch 2.13: 24.7 s (tiny), 26.4 s (seed); rounded up. Used by auto-selection.
COLD_COMPILE_SECONDS = 30.0


class CompiledAttention(CachedDecoderAttention):
    name = "compiled"
    capabilities = Capabilities(
        layout="q-kv-o",
        devices=("cpu", "cuda"),
        deterministic=False,
        tolerance=1e-5,
        warmup=(
            "torch.compile of the whole decoder step, forward and backward: cold about 26 s on a 2-core CPU; "
            "again for each new dtype, device, train/eval and need_weights combination; "
            "new models of the same shape reuse the compiled graph"
        ),
        warmup_seconds=COLD_COMPILE_SECONDS,
        notes=(
            "the decoder step (RNN cell + attention + integration + output) is one compiled graph; "
            "default mode (inductor kernels) on every device; on CUDA the whole train step is captured in one "
            "CUDA graph by quatrain's TrainStep, which holds the compiled kernels too",
            "the parallel path (teacher forcing 1.0) is not compiled",
            "w_o is folded into the decoder's integration layer once per decode (AttentionBackend.output_weight)",
            *SDPA_KERNEL_NOTES[:2],
        ),
    )

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__(hidden_size, num_heads)
        self._compiled: dict[tuple[int, str], StepFn] = {}

    @classmethod
    def unsupported_reasons(cls, hardware: Hardware, device: str, dtype: torch.dtype) -> list[Reason]:
        reasons = super().unsupported_reasons(hardware, device, dtype)
        if device == "cpu" and hardware.compiler is None:
            reasons.append(
                Reason("compiler", "torch.compile needs a C++ compiler for CPU kernels; none found", "install g++")
            )
        if device == "cuda" and not hardware.triton:
            reasons.append(
                Reason("package", "torch.compile needs Triton on CUDA; it does not import", "pip install triton")
            )
        return reasons

    def wrap_step(self, step: StepFn) -> StepFn:
        decoder = getattr(step, "__self__", None)
        if decoder is None or not hasattr(decoder, "cell_step"):
            raise TypeError(f"compiled wraps Decoder.step, got {step!r}")
        device = self.w_q.weight.device.type
        # Keyed by the decoder the step belongs to: a deep copy of the model gets its own entry.
        key = (id(decoder), device)
        if key not in self._compiled:
            self._compiled[key] = compile_decoder_step(decoder)  # cell arithmetic, fullgraph, default mode
        return self._compiled[key]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled"] = {}  # compiled functions are bound to this process's objects
        return dict(state)


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(CompiledAttention)
