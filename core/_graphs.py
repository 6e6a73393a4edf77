"""CUDA-graph capture and replay of a step, per input shape, with an announced eager fallback (``Graphed``).

A new shape's first calls run eagerly on a side stream (PyTorch's condition for a capture), the next is
captured and replayed; a shape beyond ``MAX_GRAPHS``, a batch off CUDA, or a step that cannot be captured
runs eagerly, announced once with the reason (``GraphFallbackWarning``). Used by the step engine
(``quatrain._trainstep``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

MAX_GRAPHS = 4
"""Captured shapes per step (a few length buckets); other shapes run eagerly, announced."""


class GraphFallbackWarning(UserWarning):
    """A step asked for CUDA-graph capture runs eagerly instead (no CUDA, new shape, capture failed)."""


def _signature(inputs: tuple[Tensor | None, ...]) -> tuple[Any, ...]:
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in inputs)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def _release_generator(device: torch.device) -> None:
    """After a capture that raised: give the device's default generator a fresh copy of its state.

    ``torch.cuda.graph`` marks the generator as capturing when a capture begins and unmarks it when the
    capture ends; a capture that fails (a host sync, an op that cannot be captured) ends before the unmarking,
    and every random op after it, the eager fallback's dropout and coins included, then fails with "Offset
    increment outside graph capture encountered unexpectedly". A clone of the state (same seed, same offset)
    is not capturing; the failed graph keeps the old one.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    generator = torch.cuda.default_generators[index]
    generator.graphsafe_set_state(generator.clone_state())


@contextlib.contextmanager
def _collector_held() -> Any:
    """Python's cycle collector held off while a graph is captured.

    The collector runs at any allocation, and a dropped engine is a reference cycle holding its CUDA graphs;
    freed in the middle of another capture, a graph's destruction invalidates that capture ("operation not
    permitted when stream is capturing", then "operation failed due to a previous error during capture").
    ``torch.cuda.graph`` no longer collects before a capture (``torch.compiler.config.force_cudagraph_gc``).
    Cycles that die meanwhile wait for the next collection, after the capture.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Graphed:
    """Runs ``body(*inputs)`` eagerly, or replays it from a CUDA graph captured per input shape.

    A new shape's first ``warmup`` calls run eagerly on a side stream (as PyTorch requires before a
    capture); they are real calls whose results count. The next call captures the body and replays it.
    """

    def __init__(self, body: Callable[..., Tensor], *, cuda_graph: bool, warmup: int, what: str) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 before a CUDA-graph capture, got {warmup}")
        self.body, self.want_graph, self.warmup, self.what = body, cuda_graph, warmup, what
        self.graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, tuple[Tensor | None, ...], Tensor]] = {}
        self.seen: dict[tuple[Any, ...], int] = {}
        self.fallback_reason: str | None = None
        self._warned: set[tuple[Any, ...]] = set()
        self._stream: torch.cuda.Stream | None = None

    def _give_up(self, reason: str) -> None:
        self.want_graph = False
        self.fallback_reason = reason
        message = f"{self.what}: CUDA-graph capture off, running eagerly: {reason}"
        warnings.warn(message, GraphFallbackWarning, stacklevel=5)
        log.warning(message)

    def pending(self, *inputs: Tensor | None) -> bool:
        """Whether a call with these inputs would warm up or capture (not replay, not run plainly eagerly)."""
        x = inputs[0]
        wanted = self.want_graph and x is not None and x.is_cuda
        return wanted and _signature(inputs) not in self.graphs and len(self.graphs) < MAX_GRAPHS

    def reset(self) -> None:
        """Forget the captured graphs (their recorded work changed, e.g. a new teacher-forcing rate)."""
        self.graphs.clear()
        self.seen.clear()

    def __call__(self, *inputs: Tensor | None) -> Tensor:
        key = _signature(inputs)
        captured = self.graphs.get(key)
        if captured is not None:
            graph, static, result = captured
            for s, t in zip(static, inputs, strict=True):
                if s is not None and t is not None:
                    s.copy_(t, non_blocking=True)
            graph.replay()
            return result.clone()
        if not self.want_graph:
            return self.body(*inputs)
        x = inputs[0]
        assert x is not None
        if not x.is_cuda:
            self._give_up(f"CUDA graphs need a CUDA device, the batch is on {x.device}")
            return self.body(*inputs)
        if len(self.graphs) >= MAX_GRAPHS:
            if key not in self._warned:
                self._warned.add(key)
                message = f"{self.what}: {len(self.graphs)} shapes captured; batch {tuple(x.shape)} runs eagerly"
                warnings.warn(message, GraphFallbackWarning, stacklevel=3)
                log.warning(message)
            return self.body(*inputs)
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] <= self.warmup:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=x.device)
            self._stream.wait_stream(torch.cuda.current_stream(x.device))
            try:
                with torch.cuda.stream(self._stream):
                    result = self.body(*inputs)
            except Exception as e:  # e.g. a backend that captures graphs of its own: run it as it wants
                torch.cuda.synchronize(x.device)
                self._give_up(f"warm-up on a side stream failed: {type(e).__name__}: {_first_line(e)}")
                return self.body(*inputs)
            torch.cuda.current_stream(x.device).wait_stream(self._stream)
            return result
        static = tuple(None if t is None else t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            with _collector_held(), torch.cuda.graph(graph):
                result = self.body(*static)
        except Exception as e:  # an op that cannot be captured (host sync, nested graphs): run eagerly
            _release_generator(x.device)
            torch.cuda.synchronize(x.device)
            self._give_up(f"capture failed: {type(e).__name__}: {_first_line(e)}")
            return self.body(*inputs)
        self.graphs[key] = (graph, static, result)
        log.info("%s: captured a CUDA graph for batch %s %s", self.what, tuple(x.shape), x.dtype)
        graph.replay()
        return result.clone()
