"""The resumable training state: model, optimizer and RNG states in one safetensors file with JSON metadata
(never pickle), and the JSON-lines log; both written atomically.

One RNG save/restore serves one process and every rank of a distributed job (``rng_tensors`` /
``restore_rng``): the CPU generator and the training device's CUDA generator of each rank.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ._checkpoint import atomic_write_bytes
from ._distributed import DistContext, all_gather_objects
from ._errors import CheckpointError
from ._recipe import paths_for

STATE_FORMAT = "quatrain-train-state/1"
_GROUP_FLAGS = ("capturable", "foreach", "fused", "differentiable", "maximize")
"""Optimizer settings that belong to this run's device and engine, not to the saved state."""


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Tensor) else value


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """The optimizer's per-parameter state as named tensors, and its param groups as JSON-ready dicts
    (a learning rate held in a device tensor, as in a captured step, is written as a number)."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    groups = [{k: _plain(v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, groups


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], groups: Any) -> None:
    """Load what ``optimizer_tensors`` saved into ``optimizer``, keeping its own device settings
    (capturable, foreach, ...) and its learning-rate object (a device tensor stays one)."""
    entries: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    lrs = [group["lr"] for group in optimizer.param_groups]
    merged = []
    for saved, current in zip(groups, optimizer.param_groups, strict=True):
        group = dict(saved)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        group.update({k: current[k] for k in _GROUP_FLAGS if k in current})
        merged.append(group)
    optimizer.load_state_dict({"state": entries, "param_groups": merged})
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        if isinstance(lr, Tensor):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr


def rng_tensors(ctx: DistContext) -> dict[str, Tensor]:
    """This job's RNG states, for a training state: 'rng.torch' (rank 0's CPU generator), 'rng.torch.rankN'
    for the other ranks, and each rank's CUDA generator of its training device as 'rng.cuda.rankN'.

    In a distributed job this is a collective (every rank calls it; rank 0 gets everyone's).
    """
    own: dict[str, Tensor] = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(ctx.device)
    tensors: dict[str, Tensor] = {}
    for rank, states in enumerate(all_gather_objects(ctx, own)):
        for kind, state in states.items():
            tensors[f"rng.{kind}" if (rank == 0 and kind == "torch") else f"rng.{kind}.rank{rank}"] = state
    return tensors


def restore_rng(ctx: DistContext, tensors: Mapping[str, Tensor]) -> None:
    """Put back this rank's RNG states saved by ``rng_tensors`` (a rank that a smaller job did not have
    keeps rank 0's CPU state)."""
    own = "rng.torch" if ctx.rank == 0 else f"rng.torch.rank{ctx.rank}"
    torch.set_rng_state(tensors.get(own, tensors["rng.torch"]))
    cuda = tensors.get(f"rng.cuda.rank{ctx.rank}")
    if cuda is not None and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, ctx.device)


def write_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: Mapping[str, Tensor],
    meta: Mapping[str, Any],
) -> None:
    """Write the training state atomically (the previous file survives a failed write)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, groups = optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors.update(rng)
    header = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
    header["format"] = STATE_FORMAT
    header["param_groups"] = json.dumps(groups)
    try:
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))
    except OSError as e:
        raise CheckpointError(f"cannot write training state {str(path)!r}: {e.strerror or e}") from None


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, str]]:
    """Read a training state: (JSON metadata, tensors, raw header). ``path`` may name the model checkpoint."""
    path = Path(path)
    if not path.name.endswith(".state.safetensors"):
        path = paths_for(path)[1]
    if not path.is_file():
        raise CheckpointError(f"no training state at {str(path)!r} to resume from")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable training state: {e}") from None
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a quatrain training state (expected format {STATE_FORMAT!r})")
    meta = {k: json.loads(v) for k, v in header.items() if k not in ("format",)}
    return meta, tensors, header


def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The epoch records as JSON lines, written atomically."""
    try:
        atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history).encode())
    except OSError as e:
        raise CheckpointError(f"cannot write log {str(path)!r}: {e.strerror or e}") from None
