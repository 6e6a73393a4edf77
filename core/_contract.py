"""The backend contract: what an attention backend declares, answers and computes for the decoder."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._deferred import Linear

DEVICE_KINDS = ("cpu", "cuda", "mps")
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# (input [B, E], rnn state, attention state, position [H], need_weights) -> (output [B, E], rnn state, weights)
StepFn = Callable[[Tensor, Any, Any, Tensor, bool], tuple[Tensor, Any, "Tensor | None"]]


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32, and so on; the names capability records use."""
    return str(dtype).removeprefix("torch.")


@attrs.frozen
class Reason:
    """Why a backend cannot run somewhere: a stable code, a sentence, and what to do about it."""

    code: str
    """Machine-readable: 'device', 'dtype', 'package', 'compiler', 'training', ..."""
    message: str
    """One sentence naming the offending value."""
    hint: str = ""
    """What would make it work, where something would."""

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@attrs.frozen(kw_only=True)
class Hardware:
    """What the machine offers, as a backend's probe needs to know it. Built by the registry's hardware probe."""

    device: str
    """Best accelerator present: 'cuda', 'mps' or 'cpu'."""
    device_name: str
    """Human name of that device (GPU model or CPU model)."""
    cuda_available: bool
    cuda_capability: tuple[int, int] | None
    mps_available: bool
    torch_version: str
    threads: int
    compiler: str | None
    """Path of the C++ compiler torch.compile's CPU backend would use (``$CXX``, g++, c++, clang++), or None."""
    triton: bool
    """Whether Triton (torch.compile's GPU code generator) imports."""

    def has(self, device: str) -> bool:
        return {"cpu": True, "cuda": self.cuda_available, "mps": self.mps_available}.get(device, False)

    def fingerprint(self) -> str:
        """A short hash naming this hardware and torch build, for caches keyed by machine."""
        blob = json.dumps(attrs.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do, declared without running it (readable even when its plugin is broken)."""

    layout: str
    """Name of the parameter layout it stores (e.g. 'split-qkvo', 'fused-qkv-o'); converters map between them."""
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    training: bool = True
    inference: bool = True
    returns_weights: bool = True
    """Can return attention weights (for plots); a backend may still skip them when not asked."""
    parallel_decode: bool = True
    """Implements parallel(), used at teacher forcing 1.0."""
    deterministic: bool = True
    """Repeated runs on one device give bit-identical results."""
    exact: bool = True
    """Computes the reference attention function (not an approximation)."""
    tolerance: float = 1e-5
    """For an approximation (``exact=False``): the relative error against naive it promises; the comparison
    rule adds it x the tensor's largest magnitude to every bound (core/_compare.py). Exact backends: unused."""
    warmup: str = "none"
    """What its first call costs beyond a normal call (e.g. 'torch.compile, about 25 s cold on CPU')."""
    warmup_seconds: float = 0.0
    """Typical one-off warm-up cost in seconds, counted against a job's length by auto-selection."""
    requires: tuple[str, ...] = ()
    """Import names of optional packages it needs."""
    notes: tuple[str, ...] = ()
    """Anything else a user choosing it should know (kernels used, known issues)."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class AttentionBackend(nn.Module):
    """Base class of every attention backend: cross-attention of decoder queries over the encoder memory.

    All exact backends compute, per head, ``softmax(Q K^T / sqrt(d_head), pads masked) V`` with
    ``Q = q Wq^T, K = M Wk^T, V = M Wv^T``, heads merged, then ``Wo``; a query whose keys are all
    masked gives a zero context, never NaN. Subclasses set ``name`` and ``capabilities``, create
    their parameters (their layout) in ``__init__(hidden_size, num_heads)``, and implement
    ``prepare`` and ``step``; ``parallel``, ``wrap_step`` and the output fold are optional.

    The output fold: a backend whose ``step``/``parallel`` end in a bias-free linear map of the heads'
    merged contexts names that ``nn.Linear`` in ``output_weight`` and returns the merged contexts, before
    it, from ``step_context``/``parallel_context``. The decoder then multiplies that weight into its
    integration layer once per decode, instead of applying it at every step (same function, one matrix
    product fewer per step; its gradients flow through the folded product).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    output_weight: ClassVar[str | None] = None
    """Attribute name of the bias-free ``nn.Linear`` (H -> H) applied last, for the output fold; None: none."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide hidden_size ({hidden_size})")
        self.hidden_size = hidden_size
        self.num_heads = num_heads

    @classmethod
    def unsupported_reasons(cls, hardware: Hardware, device: str, dtype: torch.dtype) -> list[Reason]:
        """Why this backend cannot run on ``device`` in ``dtype`` here; an empty list means it can.

        The default checks the declared devices, dtypes and required packages; override to add more
        (and call this one).
        """
        caps = cls.capabilities
        reasons = []
        if device not in caps.devices:
            reasons.append(
                Reason("device", f"{cls.name} does not run on {device}", f"it runs on: {', '.join(caps.devices)}")
            )
        elif not hardware.has(device):
            reasons.append(
                Reason("device", f"no {device} device on this machine", f"this machine has: {hardware.device}")
            )
        if dtype_name(dtype) not in caps.dtypes:
            reasons.append(
                Reason(
                    "dtype", f"{cls.name} does not support {dtype_name(dtype)}", f"supported: {', '.join(caps.dtypes)}"
                )
            )
        for package in caps.requires:
            if importlib.util.find_spec(package) is None:
                reasons.append(Reason("package", f"package {package!r} is not installed", f"pip install {package}"))
        return reasons

    def prepare(self, memory: Tensor, key_mask: Tensor) -> Any:
        """Called once per sequence, before the first step.

        Args:
            memory: encoder states, (B, S, H).
            key_mask: (B, S) bool, True where a key may be attended to.

        Returns:
            Any state that ``step``/``parallel`` need (K and V projected once, or just the inputs);
            tensors in it keep their autograd history.
        """
        raise NotImplementedError

    def step(self, query: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend with one decoder step's query (B, H); return the context (B, H) and, if
        ``need_weights``, the attention weights (B, heads, S), else None."""
        raise NotImplementedError

    def parallel(self, queries: Tensor, state: Any, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend with all queries (B, T, H) at once; contexts (B, T, H), weights (B, heads, T, S).

        Only called when ``capabilities.parallel_decode`` is true.
        """
        raise NotImplementedError(f"backend {self.name!r} has no parallel path")

    def step_context(self, query: Tensor, state: Any) -> Tensor:
        """``step``'s output before ``output_weight``: the heads' merged contexts (B, H) (the output fold)."""
        raise NotImplementedError(f"backend {self.name!r} declares no output fold")

    def step_integrated(
        self, query: Tensor, state: Any, weight: Tensor, bias: Tensor, linear: Linear = F.linear
    ) -> Tensor:
        """The first layer of the decoder's folded integration MLP at one step: ``linear([query |
        step_context], weight, bias)`` (B, H), with ``weight`` (H, 2H) the folded weight (``Decoder.fold``).

        ``linear`` is how the decoder applies its own layers (``F.linear``, or one decode's
        ``DeferredLinears``, which sums the weight's gradient once after the last step). Override to compute
        the layer with the attention (``triton-step`` multiplies the query by ``w_q`` and the weight's query
        half in one product and adds the context half's product in place: no concatenated input, no product
        over a doubled width). Default: the concatenation, then ``linear``.
        """
        return linear(torch.cat([query, self.step_context(query, state)], dim=-1), weight, bias)

    def parallel_context(self, queries: Tensor, state: Any) -> Tensor:
        """``parallel``'s output before ``output_weight`` (B, T, H) (the output fold)."""
        raise NotImplementedError(f"backend {self.name!r} declares no output fold")

    def wrap_step(self, step: StepFn) -> StepFn:
        """Return the whole decoder step (RNN cell, attention, integration, output) as this backend
        wants to run it; called once per decode, so memoise anything expensive. Default: unchanged."""
        return step


def key_padding_guard(key_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Make every row of a key mask attend somewhere, and say which rows had no key at all.

    Returns ``(safe_mask, has_key)``: ``safe_mask`` (B, S) lets fully masked rows attend everywhere
    (so softmax stays finite), and ``has_key`` (B, 1) is 1.0 where the row had a real key; multiply
    the context by it to give fully masked rows exactly zero, with finite gradients.
    """
    has_key = key_mask.any(dim=-1, keepdim=True)  # (B, 1)
    return key_mask | ~has_key, has_key
