"""Weight gradients deferred over a decode: a linear map that every step applies, its gradient summed once.

A sequential decode applies the same linear layers at every step. Autograd then computes, per step and
per layer, a (out x in) weight-gradient product over B rows, a bias reduction and an accumulation into
the gradient so far: at the seed preset on an H200, small kernels that cost more than the arithmetic
(deferring them took about 2.3 ms off the 50-step sequential train step at batch 32 fp32, the
no-attention baseline's and every backend's alike: benchmarks/h200-2026-12-02d/README.md, runs 2 and 3,
two leases).
Here each step's backward computes only its input's gradient and leaves ``(dy, x)``; after the last
step's backward, one product over all steps' rows gives ``dW = sum_t dy_t^T x_t`` and one sum gives the
bias's. Same function, same gradients (to float rounding; tests/core/test_deferred.py).
Since the replayed training decode (core/_replay.py), a decode on the 'steps' engine runs no step with
autograd; what defers here now are the CPU stretches engine's lone steps, the per-step form
(``Decoder.step_form = 'steps'``) and backends without a parallel decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Linear = Callable[..., Tensor]
"""What applies a step's linear layers: ``F.linear`` or a ``DeferredLinears``, called as (x, weight, bias)."""
Record = tuple[Tensor, Tensor]
"""One step's share of a layer's weight gradient: (dy (N, out), the step's input x (N, in))."""


class _Defer(torch.autograd.Function):
    """Identity on a layer's weight and bias whose backward adds every step's share in one product.

    Every step's ``_Apply`` reads the views it returns, so autograd runs this after all of their backwards.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bias: Tensor | None, records: list[Record]) -> tuple[Tensor, Tensor | None]:
        ctx.records = records
        ctx.set_materialize_grads(False)
        return weight.view_as(weight), (bias.view_as(bias) if bias is not None else None)

    @staticmethod
    def backward(ctx: Any, dw: Tensor | None, db: Tensor | None) -> tuple[Tensor | None, Tensor | None, None]:
        records: list[Record] = ctx.records
        if records:
            dy, x = (torch.cat(parts) for parts in zip(*records, strict=True))  # all steps' rows
            records.clear()
            # Under autocast dy is in its dtype and x may not be (a step's float32 input): the product runs
            # in dy's, as autocast runs the plain backward's (autograd casts the result to the weight's).
            dw_steps = dy.t() @ x.to(dy.dtype)
            dw = dw_steps if dw is None else dw + dw_steps
            if ctx.needs_input_grad[1]:
                db = dy.sum(0) if db is None else db + dy.sum(0)
        return dw, db, None


class _Apply(torch.autograd.Function):
    """``F.linear`` whose backward gives the input's gradient at once and leaves the weight's to ``_Defer``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, records: list[Record]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.records = records
        ctx.deferring = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        if ctx.deferring:
            ctx.records.append((dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])))
        return (dy @ weight.to(dy.dtype) if ctx.needs_input_grad[0] else None), None, None, None


class DeferredLinears:
    """``F.linear`` for the steps of one decode, each weight's gradient deferred to one product.

    Call it as ``F.linear(x, weight, bias)``; the first call with a weight sets up its deferral. Make one per
    decode, with gradients enabled; the decoder passes it to its steps (``Decoder.step(..., linear=...)``).
    """

    def __init__(self) -> None:
        self._layers: dict[int, tuple[Tensor, Tensor | None, list[Record], Tensor]] = {}

    def views(self, weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor | None, list[Record]]:
        """What a step reads for this layer: views of ``weight`` and ``bias`` whose backward adds the deferred
        gradient, and the list each step's ``(dy, x)`` goes to. Made on the layer's first use. A step computing
        its own input gradient (a fused kernel) reads the views and appends to the list itself."""
        entry = self._layers.get(id(weight))
        if entry is None:
            records: list[Record] = []
            w, b = weight, bias
            device = weight.device.type
            if torch.is_autocast_enabled(device):
                # Autocast casts a parameter once per forward (its weight cache) but a view at every use, and
                # a step's backward would cast it again: cast once a decode here, and the views are the cast's.
                dtype = torch.get_autocast_dtype(device)
                w, b = weight.to(dtype), (bias.to(dtype) if bias is not None else None)
            w, b = _Defer.apply(w, b, records)
            entry = (w, b, records, weight)  # the weight itself kept, so its id stays this layer's
            self._layers[id(weight)] = entry
        return entry[0], entry[1], entry[2]

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        w, b, records = self.views(weight, bias)
        return _Apply.apply(x, w, b, records)
