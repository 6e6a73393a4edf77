"""The 'stretches' engine's sequential decode: each stretch of teacher-forced steps as one RNN call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Run = Callable[..., tuple[Tensor, Any, Tensor | None]]
"""``Decoder.run``: (inputs (B, n, E), state, attn_state, positions (n, H), need_weights) -> outputs, state, weights."""


def decode_stretches(
    run: Run,
    step: Any,
    inputs: Tensor,
    coins: Tensor,
    state: Any,
    attn_state: Any,
    positions: Tensor,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """The step loop's result, with each stretch of known inputs (step 0, then every step whose coin says
    'target') run as one ``run`` call; a step that reads the model's own output runs alone (``step``).

    Equal to the step loop to float tolerance, outputs and gradients (tests/core/test_model.py).
    """
    length = inputs.shape[1]
    known = [True, *coins[1:].tolist()]  # the coins on the host: free on CPU, where this path runs
    outputs: list[Tensor] = []
    weights: list[Tensor] = []
    t = 0
    while t < length:
        if known[t]:
            end = t + 1
            while end < length and known[end]:
                end += 1
            y, state, w = run(inputs[:, t:end], state, attn_state, positions[t:end], need_weights)
        else:
            end = t + 1
            inp = outputs[-1][:, -1].detach().contiguous()  # one stride for every call (compiled steps guard on it)
            y1, state, w1 = step(inp, state, attn_state, positions[t], need_weights)
            y, w = y1.unsqueeze(1), (w1.unsqueeze(2) if w1 is not None else None)
        outputs.append(y)
        if w is not None:
            weights.append(w)
        t = end
    return torch.cat(outputs, dim=1), (torch.cat(weights, dim=2) if weights else None)
