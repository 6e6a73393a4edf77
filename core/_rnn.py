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


class _Sequence(torch.autograd.Function):
    """A decode's RNN outputs, already computed step by step without autograd, as autograd sees them: a
    function of the inputs the steps read, the initial state, the input projection and the RNN's weights,
    whose backward is ``DecodeRNN.backward`` (the whole sequence differentiated in one call)."""

    @staticmethod
    def forward(
        ctx: Any, decode: DecodeRNN, inputs: Tensor, h0: Tensor, c0: Tensor | None, *params: Tensor | None
    ) -> Tensor:
        ctx.decode = decode
        ctx.save_for_backward(inputs)
        ctx.set_materialize_grads(False)
        return torch.stack(decode.outputs, 1)  # (B, T, H)

    @staticmethod
    def backward(ctx: Any, d_out: Tensor | None) -> tuple[Tensor | None, ...]:
        (inputs,) = ctx.saved_tensors
        return (None, *ctx.decode.backward(d_out, inputs, ctx.needs_input_grad[1:]))


def single_layers(rnn: nn.RNNBase, projection: nn.Linear, device: torch.device, dtype: torch.dtype) -> list[nn.RNNBase]:
    """One single-layer module per layer of ``rnn`` (its own contiguous weights, as cuDNN wants them), the
    first taking ``projection``'s input (``DecodeRNN`` folds the projection into it), with a bias if either
    has one."""
    extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    kind: Any = type(rnn)
    first_bias = rnn.bias or projection.bias is not None
    layers = [
        kind(projection.in_features if layer == 0 else rnn.hidden_size, rnn.hidden_size, 1,
             bias=first_bias if layer == 0 else rnn.bias, batch_first=True, **extra).to(device=device, dtype=dtype)
        for layer in range(rnn.num_layers)
    ]  # fmt: skip
    for module in layers:
        if device.type == "cuda" and len({w.untyped_storage().data_ptr() for w in module._flat_weights}) > 1:
            _flatten(module)
    return layers


def _flatten(module: nn.RNNBase) -> None:
    """Put ``module``'s weights in one chunk in cuDNN's layout, as ``flatten_parameters`` does for float32.

    ``flatten_parameters`` skips dtypes ``torch.backends.cudnn.is_acceptable`` rejects, bfloat16 among them,
    although cuDNN runs them (autocast re-flattens the weights to bfloat16 at every call): without one chunk
    cuDNN compacts the weights at every call (benchmarks/rnn_chunks.py, H200, 2026-12-02).
    """
    import torch.backends.cudnn.rnn as cudnn_rnn

    weights = [w for w in module._flat_weights if w is not None]
    with torch.cuda.device_of(weights[0]), torch.no_grad():
        torch._cudnn_rnn_flatten_weight(
            weights, 4 if module.bias else 2, module.input_size, cudnn_rnn.get_cudnn_mode(module.mode),
            module.hidden_size, 0, 1, True, False,
        )  # fmt: skip


class SingleLayers:
    """A decoder's cache of ``single_layers`` modules, one list per device and compute dtype (autocast's,
    under autocast). A copy of the model (deepcopy, pickle) starts with none: a copied RNN module's weights
    are no longer one contiguous chunk, which cuDNN would compact at every call."""

    def __init__(self) -> None:
        self._made: dict[tuple[torch.device, torch.dtype], list[nn.RNNBase]] = {}

    def __call__(self, rnn: nn.RNNBase, projection: nn.Linear, like: Tensor) -> list[nn.RNNBase]:
        device = like.device
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else like.dtype
        if (device, dtype) not in self._made:
            self._made[device, dtype] = single_layers(rnn, projection, device, dtype)
        return self._made[device, dtype]

    def __getstate__(self) -> dict[str, Any]:
        return {"_made": {}}

    def __deepcopy__(self, memo: dict[int, Any]) -> SingleLayers:
        return SingleLayers()


class DecodeRNN:
    """A sequential decode's input projection and RNN: run step by step, differentiated in one call.

    In a sequential decode, a step's input is a target or the previous step's detached output: no gradient
    runs from one step's RNN output into a later step's input. So the decode's RNN is, to autograd, one call
    over the whole input sequence, although the forward must run step by step (a step's input is known only
    once the step before it ran). Here each step runs without autograd, one call per layer (``advance``);
    ``sequence`` then hands autograd all the steps' outputs at once, and its backward runs the whole sequence
    again, layer by layer with the same dropout masks, and differentiates it in one call: cuDNN's sequence
    backward where a backward per step ran (benchmarks/rnn_backward.py).

    The input projection is folded into the first layer once per decode (its input weight ``W_ih W_in``, its
    input bias ``b_ih + W_ih b_in``: the same function, one product a step fewer); the gradients of the
    projection and of the first layer's weights are mapped back from the folded ones in weight space.

    Args:
        rnn: the decoder's stacked RNN; layers: ``single_layers(rnn, projection)``'s modules (reused across
            decodes, refreshed here; their dtype is the one the steps compute in).
        projection: the input projection (``nn.Linear``) applied to each step's input before the RNN.
        state: the initial state, h (L, B, H) or (h, c).
        length: the number of steps; the inter-layer dropout's masks are drawn for all of them at once.
        keep: keep every step's output for ``sequence`` (a replay follows); False (inference): keep none.
    """

    def __init__(
        self,
        rnn: nn.RNNBase,
        layers: list[nn.RNNBase],
        projection: nn.Linear,
        state: Any,
        length: int,
        keep: bool = True,
    ) -> None:
        h0, c0 = state if isinstance(rnn, nn.LSTM) else (state, None)
        self.dtype: torch.dtype = next(layers[0].parameters()).dtype
        self.layers, self.projection, self.rnn = layers, projection, rnn
        self.params = [p for layer in range(rnn.num_layers) for p in _layer_weights(rnn, layer)]
        with torch.no_grad(), torch.autocast(h0.device.type, enabled=False):
            for layer, module in enumerate(layers):
                mine, theirs = _layer_weights(module, 0), _layer_weights(rnn, layer)
                if layer == 0:  # the projection folded in, in the parameters' dtype
                    w_ih, b_ih = _folded(theirs[0], theirs[2] if rnn.bias else None, projection)
                    b_hh = theirs[3] if rnn.bias else torch.zeros_like(b_ih)
                    theirs = [w_ih, theirs[1], *([b_ih, b_hh] if module.bias else [])]
                for m, t in zip(mine, theirs, strict=True):
                    m.copy_(t)  # a cast under autocast: once per decode
        self.h0, self.c0 = h0, c0
        self.states = [
            (h0[i : i + 1].detach().to(self.dtype), c0[i : i + 1].detach().to(self.dtype)) if c0 is not None
            else h0[i : i + 1].detach().to(self.dtype)
            for i in range(rnn.num_layers)
        ]  # fmt: skip
        p = rnn.dropout if rnn.training and rnn.num_layers > 1 else 0.0
        shape = (rnn.num_layers - 1, length, h0.shape[1], rnn.hidden_size)  # (L - 1, T, B, H)
        self.masks = torch.empty(shape, dtype=self.dtype, device=h0.device).bernoulli_(1 - p).div_(1 - p) if p else None
        self.keep, self.steps = keep, 0
        self.outputs: list[Tensor] = []

    def advance(self, inp: Tensor) -> Tensor:
        """One step without autograd: input (B, E) -> the top layer's output (B, H), in ``dtype``."""
        t = self.steps
        self.steps += 1
        with torch.no_grad(), torch.autocast(inp.device.type, enabled=False):
            x = inp.to(self.dtype)
            for layer, module in enumerate(self.layers):
                if layer > 0 and self.masks is not None:
                    x = x * self.masks[layer - 1, t]
                out, self.states[layer] = module(x.unsqueeze(1), self.states[layer])
                x = out.squeeze(1)
        if self.keep:
            self.outputs.append(x)
        return x

    def sequence(self, inputs: Tensor) -> Tensor:
        """The outputs of every step so far (B, T, H), differentiable.

        Args:
            inputs: (B, T, E), the inputs the steps read, in order, as autograd should see them (step 0's
                may be the decoder's start vector, a forced step's a target that needs a gradient).
        """
        if not self.keep:
            raise RuntimeError("this DecodeRNN keeps no outputs (keep=False): nothing to hand autograd")
        weight, bias = self.projection.weight, self.projection.bias
        out: Tensor = _Sequence.apply(self, inputs, self.h0, self.c0, weight, bias, *self.params)
        return out

    def backward(self, d_out: Tensor | None, inputs: Tensor, needed: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        """The gradients of (inputs, h0, c0, the projection's weight and bias, the RNN's weights)."""
        if d_out is None or not self.outputs:
            return (None,) * len(needed)
        with torch.enable_grad(), torch.autocast(d_out.device.type, enabled=False):
            x = inputs.detach().to(self.dtype).requires_grad_(needed[0])  # (B, T, E)
            h0 = self.h0.detach().to(self.dtype).requires_grad_()
            c0 = self.c0.detach().to(self.dtype).requires_grad_() if self.c0 is not None else None
            hidden = x
            for layer, module in enumerate(self.layers):
                if layer > 0 and self.masks is not None:
                    hidden = hidden * self.masks[layer - 1].transpose(0, 1)
                state = (h0[layer : layer + 1], c0[layer : layer + 1]) if c0 is not None else h0[layer : layer + 1]
                hidden, _ = module(hidden, state)
            weights = [p for module in self.layers for p in _layer_weights(module, 0)]
            wanted = [*([x] if needed[0] else []), h0, *([c0] if c0 is not None else []), *weights]
            grads = list(torch.autograd.grad(hidden, wanted, d_out.to(self.dtype)))
        d_inputs = grads.pop(0).to(inputs.dtype) if needed[0] else None
        dh0 = grads.pop(0).to(self.h0.dtype)
        dc0 = grads.pop(0).to(self.c0.dtype) if self.c0 is not None else None
        n = len(_layer_weights(self.layers[0], 0))
        with torch.autocast(d_out.device.type, enabled=False):
            d_proj, d_first = _unfolded(grads[:n], _layer_weights(self.rnn, 0), self.projection, self.rnn.bias)
        rest = grads[n:]
        d_weights = [g.to(p.dtype) for g, p in zip([*d_first, *rest], self.params, strict=True)]
        self.masks, self.outputs = None, []
        return (d_inputs, dh0, dc0, *d_proj, *d_weights)


def _folded(w_ih: Tensor, b_ih: Tensor | None, projection: nn.Linear) -> tuple[Tensor, Tensor]:
    """The first layer's input weight and bias with the projection folded in: ``W_ih W_in``, ``b_ih + W_ih b_in``."""
    w_in, b_in = projection.weight, projection.bias
    bias = w_ih @ b_in if b_in is not None else torch.zeros_like(w_ih[:, 0])
    return w_ih @ w_in, bias if b_ih is None else bias + b_ih


def _unfolded(
    grads: list[Tensor], weights: list[Tensor], projection: nn.Linear, rnn_bias: bool
) -> tuple[list[Tensor | None], list[Tensor]]:
    """The gradients of (the projection's weight and bias) and of the first layer's own weights, from those
    of its folded module (w_ih', w_hh[, b_ih', b_hh]): by the chain rule through ``_folded``, in the
    parameters' dtype."""
    w_ih, w_in, b_in = weights[0], projection.weight, projection.bias
    dw, dw_hh = grads[0].to(w_ih.dtype), grads[1]
    db = grads[2].to(w_ih.dtype) if len(grads) > 2 else None
    dw_ih = dw @ w_in.t()  # (G H, H)
    if db is not None and b_in is not None:
        dw_ih = dw_ih + torch.outer(db, b_in)
    d_proj: list[Tensor | None] = [w_ih.t() @ dw, w_ih.t() @ db if db is not None and b_in is not None else None]
    own = [dw_ih, dw_hh, *([db, grads[3]] if rnn_bias and db is not None else [])]
    return d_proj, own


def _layer_weights(rnn: nn.RNNBase, layer: int) -> list[Tensor]:
    """Layer ``layer``'s weights of ``rnn`` in its own order (w_ih, w_hh, then the biases if it has them)."""
    names = ["weight_ih", "weight_hh", *(["bias_ih", "bias_hh"] if rnn.bias else [])]
    return [getattr(rnn, f"{name}_l{layer}") for name in names]
