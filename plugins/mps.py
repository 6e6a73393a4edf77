"""``mps``: the cached decoder on Apple Metal, with a table of known MPS problems its probe consults.

The math is the cached decoder's and device-agnostic (so tests run it on CPU, bypassing the probe);
what this module adds is the Metal-specific knowledge: when MPS cannot run the job, and why.
Workarounds built into the math: rows whose keys are all masked never reach softmax as a row of -inf
(MPS softmax returns NaN there, unlike CUDA; see the table), because ``key_padding_guard`` opens them
up and zeroes their context afterwards.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import attrs
import torch

from quatrain import Capabilities, Hardware, Reason, hookimpl

from ._attention import SDPA_KERNEL_NOTES
from .cached_decoder import CachedDecoderAttention


def _macos_version() -> tuple[int, ...]:
    """(major, minor) of macOS, or () elsewhere."""
    release = platform.mac_ver()[0]
    return tuple(int(part) for part in release.split(".") if part.isdigit()) if release else ()


@attrs.frozen
class KnownIssue:
    """One known MPS problem: when it bites, what it does, what to do, and where it is documented."""

    code: str
    applies: Callable[[torch.dtype], bool]
    message: str
    hint: str
    source: str


KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        code="package",
        applies=lambda dtype: not torch.backends.mps.is_built(),
        message="this torch build has no MPS support",
        hint="install the macOS arm64 wheel of torch on Apple silicon",
        source="https://pytorch.org/docs/stable/notes/mps.html",
    ),
    KnownIssue(
        code="dtype",
        applies=lambda dtype: dtype == torch.bfloat16 and bool(_macos_version()) and _macos_version() < (14,),
        message="bfloat16 on MPS needs macOS 14 or later",
        hint="use float16 or float32, or upgrade macOS",
        source="torch raises 'MPS BFloat16 is only supported on MacOS 14 or newer'",
    ),
    KnownIssue(
        code="dtype",
        applies=lambda dtype: dtype == torch.float64,
        message="MPS has no float64",
        hint="use float32",
        source="https://pytorch.org/docs/stable/notes/mps.html",
    ),
)
"""Consulted by ``MPSAttention.unsupported_reasons``. Issues handled in the math rather than refused:
softmax over a row of -inf gives NaN on MPS (nari-labs/dia#252), avoided by the padding guard."""


class MPSAttention(CachedDecoderAttention):
    name = "mps"
    capabilities = Capabilities(
        layout="q-kv-o",
        devices=("mps",),
        dtypes=("float32", "float16", "bfloat16"),
        deterministic=False,
        notes=(
            "the cached decoder's math for Apple Metal; bfloat16 needs macOS 14+",
            "fully masked key rows are guarded before softmax (MPS softmax of all -inf is NaN)",
            "set PYTORCH_ENABLE_MPS_FALLBACK=1 if a torch op of the model is missing on MPS",
            *SDPA_KERNEL_NOTES[1:2],
        ),
    )

    @classmethod
    def unsupported_reasons(cls, hardware: Hardware, device: str, dtype: torch.dtype) -> list[Reason]:
        reasons = super().unsupported_reasons(hardware, device, dtype)
        if device == "mps":
            reasons += [Reason(i.code, i.message, i.hint) for i in KNOWN_ISSUES if i.applies(dtype)]
        return reasons


@hookimpl
def register_attention_backends(register: Any) -> None:
    register(MPSAttention)
