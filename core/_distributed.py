"""Data-parallel training across processes: the process group from torchrun's environment, rank helpers,
metric reduction, the backend chosen once and broadcast, gradients summed over ranks, and failures that end
the job instead of hanging it.

quatrain uses ``torch.distributed`` (launched by ``torchrun``): gloo when training on CPU, NCCL on CUDA. The
step engine (quatrain._trainstep) sums the gradients itself in one all-reduce after backward, so the whole
data-parallel step, collective included, fits in one CUDA graph. A run without torchrun's variables is one process
and touches none of this machinery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import attrs
import torch
import torch.distributed as dist

from ._errors import ConfigError, DistributedError

TIMEOUT_ENV = "QUATRAIN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective waits for a silent peer before the job fails (torchrun ends the job sooner when a
rank exits; this bounds the case of a rank that is alive but stuck)."""


@attrs.frozen
class DistContext:
    """Where this process stands in a job: its rank among ``world_size`` and its device.

    ``DistContext.single()`` is the one-process job; ``init_from_env`` builds the others.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    backend: str | None = None
    """'gloo' or 'nccl' while a process group is up; None for one process."""
    owns_group: bool = False
    """True when ``init_from_env`` created the process group (so its caller should ``shutdown``)."""

    @classmethod
    def single(cls, device: torch.device) -> DistContext:
        return cls(device=device)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes (the log, checkpoints, the zoo entry) and reports progress."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise DistributedError(f"{name} is not set; launch with torchrun (or quatrain train --nproc N)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name}={raw!r} is not an integer") from None


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) outside torchrun."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return 0, 1, 0
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, local


def timeout_from_env() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def init_from_env(device: torch.device) -> DistContext:
    """Join the job torchrun started (or be the only process): the process group and this rank's device.

    Args:
        device: the device asked for (from ``resolve_device``); with CUDA each rank takes
            ``cuda:LOCAL_RANK`` and NCCL, on CPU gloo.

    Raises:
        DistributedError: inconsistent variables, more local ranks than GPUs, or a group that cannot form
            within the timeout (``QUATRAIN_DIST_TIMEOUT`` seconds, default 600).
    """
    rank, world, local = world_from_env()
    if world == 1:
        return DistContext.single(device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local >= count:
            raise DistributedError(f"LOCAL_RANK={local} but this host has {count} CUDA device(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"distributed training runs on cpu (gloo) or cuda (NCCL), not {device.type!r}")
    owns = not dist.is_initialized()
    if owns:
        try:
            dist.init_process_group(backend, timeout=timeout_from_env())
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {rank} of {world} cannot join the process group: {e}") from None
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, backend=backend, owns_group=owns)


def shutdown(ctx: DistContext, *, wait_for_peers: bool = True) -> None:
    """Leave the process group (a no-op for one process).

    Args:
        wait_for_peers: meet the other ranks at a barrier first, so that no rank tears down gloo while a
            peer's last collectives are still in flight (which aborted a rank now and then:
            "terminate called without an active exception"). False after an error, where peers may be gone.
    """
    if ctx.is_distributed and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def failing_fast(ctx: DistContext) -> Iterator[None]:
    """Turn an error on one rank into a ``DistributedError`` naming that rank, and leave the group at once.

    torchrun ends the other ranks as soon as this one exits non-zero, so none waits for a collective that
    will never come; a peer's death seen from a collective reads as such.
    """
    try:
        yield
    except DistributedError:
        raise
    except Exception as e:
        if not ctx.is_distributed:
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, RuntimeError) and any(s in text.lower() for s in ("connection", "timed out", "peer")):
            raise DistributedError(f"{ctx.describe()}: a peer rank failed or stopped answering ({text})") from e
        raise DistributedError(f"{ctx.describe()} failed: {type(e).__name__}: {text}") from e


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64; ``values`` itself for one process)."""
    if not ctx.is_distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def broadcast_from_main(ctx: DistContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a JSON-like object; ``value`` itself for one process)."""
    if not ctx.is_distributed:
        return value
    box = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def all_gather_objects(ctx: DistContext, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order."""
    if not ctx.is_distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def sum_gradients(ctx: DistContext, params: Sequence[torch.Tensor]) -> None:
    """Sum every parameter's gradient over the ranks, in place, in one flattened all-reduce.

    Each rank's loss carries its share of the step's tokens, so the sum is the gradient of the whole
    step's token mean: what DistributedDataParallel's averaging gives, as one collective that a CUDA
    graph can capture with NCCL (the train step calls it between backward and the optimizer).
    """
    if not ctx.is_distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for grad, summed in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(summed)


def broadcast_parameters(ctx: DistContext, module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (all start from the same weights)."""
    if not ctx.is_distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)
