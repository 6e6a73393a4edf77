"""A training step (forward, loss, backward, clip, AdamW) and an inference step, optionally captured whole
in one CUDA graph.

On a GPU the decoder's step-by-step loop is launch-bound: hundreds of small kernels per batch. Capturing
the whole step (forward, backward and a capturable AdamW) once and replaying it removes the launch cost.
A graph replays fixed shapes only, so a batch of another shape (e.g. the last, partial batch of an epoch)
runs eagerly with the same parameters and optimizer state, announced once per shape with a warning.
Capture needs CUDA; anywhere else the step runs eagerly, announced.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ._loss import reconstruction_loss
from ._model import Autoencoder, lengths_of

log = logging.getLogger(__name__)


class GraphFallbackWarning(UserWarning):
    """A step asked for CUDA-graph capture runs eagerly instead (no CUDA, new shape, capture failed)."""


Signature = tuple[tuple[int, ...], torch.dtype, torch.device, tuple[int, ...]]


def _signature(x: Tensor, mask: Tensor) -> Signature:
    return tuple(x.shape), x.dtype, x.device, tuple(mask.shape)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""


class _Graphed:
    """Runs ``body(x, mask) -> Tensor`` eagerly, or replays it from one CUDA graph captured on static inputs.

    ``warmup`` eager calls (on a side stream, as PyTorch requires before capture) come first; they are
    real calls whose results count. The capture call records the body and replays it once.
    """

    def __init__(self, body: Callable[[Tensor, Tensor], Tensor], *, cuda_graph: bool, warmup: int, what: str) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 before a CUDA-graph capture, got {warmup}")
        self.body = body
        self.want_graph = cuda_graph
        self.warmup = warmup
        self.what = what
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.signature: Signature | None = None
        self.static: tuple[Tensor, Tensor, Tensor] | None = None  # x, mask, result
        self.fallback_reason: str | None = None
        self._warned: set[Signature] = set()
        self._stream: torch.cuda.Stream | None = None

    @property
    def graphed(self) -> bool:
        """Whether a captured graph exists (and replays batches of its shape)."""
        return self.graph is not None

    def _give_up(self, reason: str) -> None:
        self.want_graph = False
        self.fallback_reason = reason
        message = f"{self.what}: CUDA-graph capture off, running eagerly: {reason}"
        warnings.warn(message, GraphFallbackWarning, stacklevel=4)
        log.warning(message)

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor:
        self.calls += 1
        if self.graph is not None and self.static is not None:
            signature = _signature(x, mask)
            if signature == self.signature:
                lengths_of(mask)  # the model's mask check cannot run inside the graph; run it here
                sx, smask, result = self.static
                sx.copy_(x)
                smask.copy_(mask)
                self.graph.replay()
                return result.clone()
            if signature not in self._warned:
                self._warned.add(signature)
                message = (
                    f"{self.what}: batch {tuple(x.shape)} {x.dtype} differs from the captured "
                    f"{self.signature[0] if self.signature else '?'}; this shape runs eagerly"
                )
                warnings.warn(message, GraphFallbackWarning, stacklevel=3)
                log.warning(message)
            return self.body(x, mask)
        if not self.want_graph:
            return self.body(x, mask)
        if not x.is_cuda:
            self._give_up(f"CUDA graphs need a CUDA device, the batch is on {x.device}")
            return self.body(x, mask)
        if self.calls <= self.warmup:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=x.device)
            self._stream.wait_stream(torch.cuda.current_stream(x.device))
            try:
                with torch.cuda.stream(self._stream):
                    result = self.body(x, mask)
            except Exception as e:  # e.g. a backend that captures graphs of its own: run it as it wants
                torch.cuda.synchronize(x.device)
                self._give_up(f"warm-up on a side stream failed: {type(e).__name__}: {_first_line(e)}")
                return self.body(x, mask)
            torch.cuda.current_stream(x.device).wait_stream(self._stream)
            return result
        return self._capture(x, mask)

    def _capture(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths_of(mask)
        sx, smask = x.clone(), mask.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                result = self.body(sx, smask)
        except Exception as e:  # an op that cannot be captured (host sync, nested graphs): run eagerly
            torch.cuda.synchronize(x.device)
            self._give_up(f"capture failed: {type(e).__name__}: {_first_line(e)}")
            return self.body(x, mask)
        self.graph, self.static, self.signature = graph, (sx, smask, result), _signature(x, mask)
        log.info("%s: captured one CUDA graph for batch %s %s", self.what, tuple(x.shape), x.dtype)
        graph.replay()
        return result.clone()


class _Step:
    """What TrainStep and InferenceStep share: a callable replayed from a CUDA graph where possible."""

    _runner: _Graphed

    @property
    def graphed(self) -> bool:
        """Whether the step is being replayed from a captured CUDA graph."""
        return self._runner.graphed

    @property
    def fallback_reason(self) -> str | None:
        """Why capture was asked for but is off, or None."""
        return self._runner.fallback_reason

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._runner(x, mask)


class TrainStep(_Step):
    """One optimisation step on a batch: forward, ``reconstruction_loss``, backward, clip, AdamW.

    Args:
        model: the autoencoder, already on its device and dtype, in train mode.
        teacher_forcing: passed to the model's forward (1.0 runs the parallel decoder where the backend has one).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        clip: maximum gradient norm; None for no clipping.
        cuda_graph: capture the whole step (forward, backward, clip, AdamW with ``capturable=True``) in one
            CUDA graph after ``warmup`` eager steps and replay it for batches of the same shape; other
            shapes run eagerly on the same parameters and optimizer state. Off CUDA it warns and runs eagerly.
        warmup: eager steps before the capture (real steps, counted).

    Calling it returns the batch's loss (a 0-d tensor; reading it synchronises the device).
    """

    def __init__(
        self,
        model: Autoencoder,
        *,
        teacher_forcing: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        clip: float | None = 1.0,
        cuda_graph: bool = False,
        warmup: int = 3,
    ) -> None:
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing!r}")
        self.model = model
        self.teacher_forcing = teacher_forcing
        self.clip = clip
        params = [p for p in model.parameters() if p.requires_grad]
        on_cuda = bool(params) and params[0].is_cuda
        # capturable keeps AdamW's step counters on the device, which a graph needs; it only exists on CUDA.
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, capturable=cuda_graph and on_cuda)
        self._params = params
        self._runner = _Graphed(self._step, cuda_graph=cuda_graph, warmup=warmup, what="train step")

    def _step(self, x: Tensor, mask: Tensor) -> Tensor:
        # Grads stay allocated (zeroed, not freed) once a graph exists: the graph owns their memory.
        self.optimizer.zero_grad(set_to_none=self._runner.graph is None)
        out = self.model(x, mask, teacher_forcing=self.teacher_forcing)
        loss = reconstruction_loss(out.reconstruction, x, mask)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.clip)
        self.optimizer.step()
        return loss.detach()


class InferenceStep(_Step):
    """Autoregressive reconstruction without gradients (teacher forcing 0), optionally from one CUDA graph.

    Args:
        model: the autoencoder, on its device and dtype; it is switched to eval mode.
        cuda_graph: capture the forward in one CUDA graph after ``warmup`` eager calls (CUDA only).
        warmup: eager calls before the capture.

    Calling it returns the reconstruction (B, T, E).
    """

    def __init__(self, model: Autoencoder, *, cuda_graph: bool = False, warmup: int = 2) -> None:
        self.model = model.eval()
        self._runner = _Graphed(self._forward, cuda_graph=cuda_graph, warmup=warmup, what="inference step")

    def _forward(self, x: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x, mask, teacher_forcing=0.0).reconstruction
