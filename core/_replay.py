"""The 'steps' engine's training decode: every step run without autograd, then the decode differentiated as
one parallel pass over the inputs the steps read.

A sequential decode feeds each step a target or the previous step's *detached* output, so no gradient runs
from one step's output into a later step. Given the inputs the steps read, the decode is, to autograd, the
teacher-forced parallel decode over those inputs: one RNN call over the sequence and all queries attending
at once. So the steps run as inference does (no activations kept, no backward per step), and the decode
is then replayed in parallel with autograd on the same inputs and the same dropout masks: its outputs are
the steps' outputs (to float rounding), its gradients those of autograd through every step
(tests/core/test_replay.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._rnn import DecodeRNN

if TYPE_CHECKING:
    from ._model import Decoder, Folded

Masks = tuple[Tensor | None, Tensor | None]
"""A decode's dropout masks, already scaled: the queries' and the integration layer's, or None where that
dropout is off. Drawn (T, B, H), so that a step's are contiguous."""


def replay_decode(
    decoder: Decoder,
    state: Any,
    attn_state: Folded,
    start: Tensor,
    targets: Tensor | None,
    coins: Tensor | None,
    positions: Tensor,
) -> Tensor:
    """A sequential decode's outputs (B, T, E), its steps run without autograd; with gradients enabled, the
    decode is then replayed in parallel and the result is differentiable (without, it is the steps' own).

    Args:
        decoder: the decoder (its RNN runs through a ``DecodeRNN``; after it, each step is
            ``Decoder._attend`` and the replay ``Decoder._parallel_tail``).
        state: the RNN's initial state; attn_state: the decode's ``Folded`` (``Decoder.fold``).
        start: step 0's input (B, E); targets: (B, T, E), what a forced step t reads at t - 1.
        coins: (T,) bool on the device, True where step t reads the target; None: every step after the
            first reads the previous output.
        positions: (T, H), the steps' positions.
    """
    length = positions.shape[0]
    layers = decoder._single_layers(decoder.rnn, decoder.input_proj, start)
    replay = torch.is_grad_enabled()
    decode = DecodeRNN(decoder.rnn, layers, decoder.input_proj, state, length, keep=replay)
    masks = dropout_masks(decoder, (length, start.shape[0], decoder.hidden_size), decode.dtype, start.device)
    read = [start]  # what each step reads; a forced step's target keeps its gradient (the where is recorded)
    outputs: list[Tensor] = []  # without a replay: the steps' own outputs
    for t in range(length):
        out = decode.advance(read[-1])
        if replay and t + 1 == length:
            break  # the last step's output is the replay's alone: no step reads it
        with torch.no_grad():
            y = decoder._attend(out, None, attn_state, positions[t], False, F.linear, _at(masks, t))[0]
        if not replay:
            outputs.append(y)
        if t + 1 < length:
            read.append(y if coins is None or targets is None else torch.where(coins[t + 1], targets[:, t], y))
    if not replay:
        return torch.stack(outputs, 1)
    inputs = torch.stack(read, 1).to(start.dtype)  # (B, T, E)
    by_row = (_by_row(masks[0]), _by_row(masks[1]))
    return decoder._parallel_tail(decode.sequence(inputs), attn_state, positions, False, by_row)[0]


def dropout_masks(decoder: Decoder, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Masks:
    """Masks of ``shape`` for the decoder's query dropout and its integration layer's, drawn as their
    dropouts would (scaled by 1 / (1 - p)); None for a dropout that is off."""
    drops: list[nn.Dropout] = [decoder.dropout, *(m for m in decoder.integrate if isinstance(m, nn.Dropout))]
    made = [
        torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - d.p).div_(1 - d.p)
        if d.training and d.p > 0 else None
        for d in drops
    ]  # fmt: skip
    return made[0], made[1]


def _by_row(mask: Tensor | None) -> Tensor | None:
    return mask.transpose(0, 1) if mask is not None else None  # (T, B, H) -> (B, T, H)


def _at(masks: Masks, t: int) -> Masks:
    return masks[0][t] if masks[0] is not None else None, masks[1][t] if masks[1] is not None else None
