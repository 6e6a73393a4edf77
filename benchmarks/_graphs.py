"""CUDA-graph timing shared by the benchmark scripts that time small calls (linear_forms.py, rnn_backward.py,
kernel_ab.py): a call captured ``repeat`` times in one graph, and interleaved rounds of replays.
(``benchmarks/`` is on a script's import path when it runs as ``python benchmarks/NAME.py``.)"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch


def graphed(fn: Callable[[], Any], repeat: int = 1) -> torch.cuda.CUDAGraph:
    """``fn`` called ``repeat`` times back to back in one CUDA graph, after three warm-up calls on a side
    stream (as capture wants)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            fn()
    return graph


def time_graph(graph: torch.cuda.CUDAGraph, repeat: int = 1) -> float:
    """µs per call of one replay of a graph of ``repeat`` calls, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / repeat


def interleaved(
    fns: dict[Any, Callable[[], Any]], *, rounds: int, repeat: int = 1, untimed_replay: bool = False
) -> dict[Any, float]:
    """Median µs per call of each of ``fns``, each graphed ``repeat`` times; every round replays them all in
    turn. ``untimed_replay``: each timed replay follows an untimed one (the replay's own first-touch costs)."""
    graphs = {key: graphed(fn, repeat) for key, fn in fns.items()}
    times: dict[Any, list[float]] = {key: [] for key in fns}
    for _ in range(rounds):
        for key, graph in graphs.items():
            if untimed_replay:
                graph.replay()
            times[key].append(time_graph(graph, repeat))
    return {key: statistics.median(t) for key, t in times.items()}
