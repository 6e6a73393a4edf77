"""A job's arithmetic: the precisions a train or eval step runs at, whether this machine can run one, and the
two contexts that set it up (``step_precision`` around the whole step, ``autocast`` around the forward).

- 'fp32': float32 as PyTorch runs it by default (cuDNN's RNNs on CUDA may use TF32 tensor cores; matmuls do
  not, even where the caller turned TF32 matmuls on for the process).
- 'tf32': float32 weights, and CUDA float32 matmuls on TF32 tensor cores too (10-bit mantissa products,
  float32 accumulation), forward and backward. NVIDIA GPUs only.
- 'bf16': float32 weights, the forward under bfloat16 autocast; the loss and the optimiser stay float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

from ._errors import ConfigError
from ._rnn import autocast_problem

PRECISIONS = ("fp32", "tf32", "bf16")


def precision_problem(precision: str, device: torch.device, rnn: str | None = None) -> str | None:
    """Why a job cannot run at ``precision`` on ``device``, or None. With ``rnn`` ('lstm', 'gru', 'rnn'), a
    'bf16' job is also probed for whether this machine runs that RNN under bfloat16 autocast."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})"
    if precision == "tf32" and device.type != "cuda":
        return f"TF32 is the tensor-core float32 arithmetic of NVIDIA GPUs, and this job runs on {device.type}"
    if precision == "bf16" and rnn is not None:
        return autocast_problem(rnn, device)
    return None


def require_precision(precision: str, device: torch.device, rnn: str | None = None, advice: str = "") -> None:
    """Raise ConfigError, "precision 'P': why" (then ``advice``), where ``precision_problem`` finds one."""
    if (problem := precision_problem(precision, device, rnn)) is not None:
        raise ConfigError(f"precision {precision!r}: {problem}{advice}")


@contextlib.contextmanager
def tf32_allowed(allowed: bool, with_cudnn: bool = True) -> Iterator[None]:
    """CUDA float32 matmuls on TF32 tensor cores, or not, inside the block, and cuDNN's (convolutions and RNNs)
    likewise unless ``with_cudnn`` is False (then cuDNN keeps its setting); the previous settings are restored
    after it."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = allowed if with_cudnn else torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=cudnn):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def step_precision(precision: str) -> AbstractContextManager[Any]:
    """A step's float32 arithmetic inside the block (its forward, backward and what a CUDA graph captures of
    them), whatever the caller set for the process: 'tf32', matmuls and cuDNN on TF32 tensor cores; 'fp32' and
    'bf16' (whose float32 ops are fp32's), matmuls in IEEE float32, cuDNN as the process has it (PyTorch's
    default: free to use TF32). The caller's settings are back after the block."""
    tf32 = precision == "tf32"
    return tf32_allowed(tf32, with_cudnn=tf32)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast for 'bf16' (cache off: a captured graph must not keep casts of old weights), else off."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast(device_type=device.type, enabled=False)
