"""The built-in layouts' exact converters, registered as a plugin of their own.

Layouts (attention parameter names, relative to the attention module; no biases):

- ``split-qkvo`` (naive): ``w_q.weight, w_k.weight, w_v.weight, w_o.weight``, each (H, H).
- ``fused-qkv-o`` (fused-qkv, sdpa-flash): ``w_qkv.weight`` (3H, H) = rows of Wq, Wk, Wv; ``w_o.weight``.
- ``q-kv-o`` (cached-decoder, compiled, mps): ``w_q.weight``, ``w_kv.weight`` (2H, H) = rows of Wk, Wv,
  ``w_o.weight``; for cross-attention, where K and V come from the memory once and Q from each step.

Converters only concatenate and split rows, so they are exact, and each inverse gives back its input bit
for bit (tests/plugins/test_layouts.py). Kept out of the backend modules so that disabling one backend
never removes the conversion path another backend's checkpoints need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from quatrain import CheckpointLayoutError, hookimpl

SPLIT, FUSED, Q_KV = "split-qkvo", "fused-qkv-o", "q-kv-o"


def _take(state: Mapping[str, Tensor], layout: str, names: tuple[str, ...]) -> list[Tensor]:
    missing = [n for n in names if n not in state]
    extra = sorted(set(state) - set(names))
    if missing or extra:
        raise CheckpointLayoutError(
            f"attention parameters do not match layout {layout!r}: "
            + (f"missing {', '.join(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {', '.join(extra)}" if extra else "")
        )
    return [state[n] for n in names]


def _rows(fused: Tensor, parts: int, name: str) -> list[Tensor]:
    if fused.dim() != 2 or fused.shape[0] != parts * fused.shape[1]:
        raise CheckpointLayoutError(f"{name} has shape {tuple(fused.shape)}; expected ({parts}*H, H)")
    # clone: split gives views of one storage, which safetensors refuses to save
    return [t.clone() for t in fused.chunk(parts, dim=0)]


def split_to_fused(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    q, k, v, o = _take(state, SPLIT, ("w_q.weight", "w_k.weight", "w_v.weight", "w_o.weight"))
    return {"w_qkv.weight": torch.cat([q, k, v], dim=0), "w_o.weight": o.clone()}


def fused_to_split(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    qkv, o = _take(state, FUSED, ("w_qkv.weight", "w_o.weight"))
    q, k, v = _rows(qkv, 3, "w_qkv.weight")
    return {"w_q.weight": q, "w_k.weight": k, "w_v.weight": v, "w_o.weight": o.clone()}


def split_to_q_kv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    q, k, v, o = _take(state, SPLIT, ("w_q.weight", "w_k.weight", "w_v.weight", "w_o.weight"))
    return {"w_q.weight": q.clone(), "w_kv.weight": torch.cat([k, v], dim=0), "w_o.weight": o.clone()}


def q_kv_to_split(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    q, kv, o = _take(state, Q_KV, ("w_q.weight", "w_kv.weight", "w_o.weight"))
    k, v = _rows(kv, 2, "w_kv.weight")
    return {"w_q.weight": q.clone(), "w_k.weight": k, "w_v.weight": v, "w_o.weight": o.clone()}


CONVERTERS: tuple[tuple[str, str, Callable[..., dict[str, Tensor]], Callable[..., dict[str, Tensor]]], ...] = (
    (SPLIT, FUSED, split_to_fused, fused_to_split),
    (SPLIT, Q_KV, split_to_q_kv, q_kv_to_split),
)


@hookimpl
def register_layout_converters(register: Callable[..., None]) -> None:
    for source, target, forward, inverse in CONVERTERS:
        register(source, target, forward, inverse)
