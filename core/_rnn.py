"""The decoder's RNN pieces: building the stacked RNN, one time step of it as plain cell arithmetic (what
``torch.compile`` traces), and the sinusoidal positions its queries carry."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._config import ModelConfig

_RNN = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_rnn(config: ModelConfig, input_size: int) -> nn.RNNBase:
    dropout = config.dropout if config.num_layers > 1 else 0.0  # torch warns on dropout with one layer
    return _RNN[config.rnn](input_size, config.hidden_size, config.num_layers, batch_first=True, dropout=dropout)


def autocast_problem(kind: str, device: torch.device) -> str | None:
    """Why an RNN of ``kind`` ('lstm', 'gru', 'rnn') cannot run under bfloat16 autocast on ``device``, or None.

    On CPU, oneDNN runs bfloat16 RNNs only on processors with the instructions for them: below AVX-512
    (e.g. under ``ONEDNN_MAX_CPU_ISA=AVX2``) creating its RNN primitive fails. The instruction set decides,
    not the size, so a 4-unit module is probed.
    """
    if device.type != "cpu":
        return None
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _RNN[kind](4, 4, batch_first=True)(torch.zeros(1, 1, 4))
    except RuntimeError as e:
        first = str(e).strip().split(". ")[0] if str(e).strip() else type(e).__name__
        return f"this CPU cannot run a bfloat16 {kind} under autocast ({first})"
    return None


def rnn_cell_step(rnn: nn.RNNBase, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """One time step of a stacked, unidirectional ``nn.LSTM``/``nn.GRU``/``nn.RNN``, as plain tensor math.

    Args:
        rnn: the module whose parameters are used (PyTorch's gate order: LSTM i, f, g, o; GRU r, z, n).
        x: input (B, I).
        state: h (L, B, H), or (h, c) for an LSTM.

    Returns:
        The top layer's output (B, H) and the new state, equal to ``rnn(x[:, None], state)`` to float
        rounding (tests/core/test_model.py).
    """
    lstm = isinstance(rnn, nn.LSTM)
    h0, c0 = state if lstm else (state, None)
    hs, cs = [], []
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout and rnn.training:
            x = F.dropout(x, rnn.dropout, training=True)  # as nn.LSTM does between layers
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}", None), getattr(rnn, f"bias_hh_l{layer}", None)
        gi, gh = F.linear(x, w_ih, b_ih), F.linear(h0[layer], w_hh, b_hh)  # (B, G*H)
        if lstm:
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            assert c0 is not None
            c = torch.sigmoid(f) * c0[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            cs.append(c)
        elif isinstance(rnn, nn.GRU):
            ir, iz, i_n = gi.chunk(3, dim=-1)
            hr, hz, h_n = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            x = (1 - z) * torch.tanh(i_n + r * h_n) + z * h0[layer]
        else:
            x = torch.tanh(gi + gh) if rnn.nonlinearity == "tanh" else torch.relu(gi + gh)
        hs.append(x)
    h = torch.stack(hs)
    return x, ((h, torch.stack(cs)) if lstm else h)


def sinusoids(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal positions (length, dim), computed for any length (the original's table stopped at 50)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table
