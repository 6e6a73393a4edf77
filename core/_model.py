"""The autoencoder: an RNN encoder over the padded batch, a bottleneck, an RNN decoder attending through a backend."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._config import ModelConfig
from ._contract import AttentionBackend, StepFn
from ._deferred import DeferredLinears, Linear
from ._encoder import Encoder
from ._errors import ConfigError
from ._mask import lengths_of
from ._replay import Masks, replay_decode
from ._resolve import convert_layout, resolve_backend
from ._rnn import SingleLayers, make_rnn, rnn_cell_step, sinusoids
from ._stretches import decode_stretches


class Folded(NamedTuple):
    """A decode's weights folded once per decode (``Decoder.fold``); its steps read these, not the modules."""

    state: Any
    """The backend's per-sequence state (None without attention)."""
    weight: Tensor | None
    """(H, 2H): the integration layer's first weight, its context half multiplied by the backend's output
    weight; None where that layer runs as it is (no output fold, or attention weights asked for)."""
    bias: Tensor | None
    """(H,): that layer's bias."""
    head: Tensor | None
    """(E, H): the integration MLP's last layer and the output layer as one map, ``W_out W_last``; None where
    they run as two (``Decoder.fold_head`` off)."""
    head_bias: Tensor | None
    """(E,): ``W_out b_last + b_out``."""


ENGINES = ("stretches", "steps")
"""How the sequential decode runs (``Decoder.engine``); see ``Decoder.__init__``."""
NO_MASKS: Masks = (None, None)


@attrs.frozen
class AutoencoderOutput:
    reconstruction: Tensor
    """(B, T, E): the decoded word vectors."""
    bottleneck: Tensor
    """(B, Z): the sequence code."""
    attention: Tensor | None = None
    """(B, heads, T, S) decoder-step x input-token weights, only when asked for."""


class Decoder(nn.Module):
    """RNN decoder; step t reads the target (or its own output) at t-1, never target t."""

    def __init__(self, config: ModelConfig, attention: AttentionBackend | None, engine: str | None = None) -> None:
        super().__init__()
        H, E, L = config.hidden_size, config.embed_dim, config.num_layers
        self.num_layers, self.hidden_size = L, H
        # How the sequential decode runs. 'stretches': each stretch of teacher-forced steps is one RNN call,
        # its queries attending at once (coins read on the host); a step that reads the model's own output
        # runs alone as cell arithmetic. 'steps': one RNN call per step, coins applied on the device (what a
        # CUDA graph of a fixed step pattern holds). None: 'stretches' on CPU, 'steps' elsewhere.
        if engine is not None and engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)} or None; got {engine!r}")
        self.engine = engine
        self.compiled_step: StepFn | None = None  # without attention: a compiled step (bench's compiled baseline)
        # How the 'steps' engine runs its own step. 'replay': the RNN through DecodeRNN, no autograd, training
        # replayed as one differentiated parallel pass (core/_replay.py). 'steps': ``step`` as written (A/B).
        self.step_form = "replay"
        # The integration MLP's last linear layer and the output layer, with nothing between them, run as one
        # map made once per decode (``fold``): one product a step fewer. False: as two (A/B, tests).
        self.fold_head = True
        self._single_layers = SingleLayers()
        self.start = nn.Parameter(torch.randn(E) * 0.1)  # input of step 0
        self.input_proj = nn.Linear(E, H)
        self.init_h = nn.Linear(config.bottleneck_dim, L * H)
        self.init_c = nn.Linear(config.bottleneck_dim, L * H) if config.rnn == "lstm" else None
        self.rnn = make_rnn(config, H)
        self.dropout = nn.Dropout(config.dropout)
        self.attention = attention
        self.integrate = nn.Sequential(
            nn.Linear(2 * H if attention is not None else H, H), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(H, H)
        )
        self.out = nn.Linear(H, E)

    def initial_state(self, z: Tensor) -> Any:
        B = z.shape[0]
        h = torch.tanh(self.init_h(z)).view(B, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        if self.init_c is None:
            return h
        c = torch.tanh(self.init_c(z)).view(B, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        return (h, c)

    def step(
        self,
        inp: Tensor,
        state: Any,
        attn_state: Folded,
        position: Tensor,
        need_weights: bool = False,
        linear: Linear = F.linear,
    ) -> tuple[Tensor, Any, Tensor | None]:
        """One decoder step: input (B, E) -> output (B, E); weights (B, heads, S) if asked and attending.

        ``attn_state`` is the decode's ``Folded`` (``fold``): the backend's per-sequence state and the weights
        made once per decode. ``linear`` applies the step's own linear layers (input, integration, head):
        ``F.linear``, or one decode's ``DeferredLinears``, which defers their weight gradients to one product
        after the last step.
        """
        out, state = self.rnn(linear(inp, self.input_proj.weight, self.input_proj.bias).unsqueeze(1), state)
        return self._attend(out.squeeze(1), state, attn_state, position, need_weights, linear)

    def cell_step(
        self,
        inp: Tensor,
        state: Any,
        attn_state: Folded,
        position: Tensor,
        need_weights: bool = False,
        linear: Linear = F.linear,
    ) -> tuple[Tensor, Any, Tensor | None]:
        """``step`` with the RNN layers written out as cell arithmetic (``rnn_cell_step``).

        Same function, same parameters; what ``torch.compile`` can trace on every device (the fused
        cuDNN RNN op is opaque to it, and dynamo skips ``nn.LSTM`` unless ``allow_rnn`` is set).
        """
        out, state = rnn_cell_step(self.rnn, linear(inp, self.input_proj.weight, self.input_proj.bias), state)
        return self._attend(out, state, attn_state, position, need_weights, linear)

    def _attend(
        self,
        out: Tensor,
        state: Any,
        folded: Folded,
        position: Tensor,
        need_weights: bool,
        linear: Linear,
        masks: Masks = NO_MASKS,
    ) -> tuple[Tensor, Any, Tensor | None]:
        """The step after its RNN; ``masks``: (B, H) dropout masks to apply instead of drawing them."""
        query = self._query(out, position, masks[0])  # (B, H)
        weights = None
        if folded.weight is not None:
            assert self.attention is not None and folded.bias is not None
            hidden = self.attention.step_integrated(query, folded.state, folded.weight, folded.bias, linear)
        else:
            if self.attention is not None:
                context, weights = self.attention.step(query, folded.state, need_weights)
                query = torch.cat([query, context], dim=-1)  # (B, 2H)
            hidden = linear(query, self.integrate[0].weight, self.integrate[0].bias)
        return self._head(hidden, folded, linear, masks[1]), state, weights

    def _query(self, out: Tensor, position: Tensor, mask: Tensor | None) -> Tensor:
        """The RNN's output, dropped out (with ``mask`` if given), plus its position: the attention's query.
        Under autocast not one ``addcmul``: CUDA's bf16 autocast refuses it ("Unexpected floating ScalarType")."""
        if mask is None or torch.is_autocast_enabled(out.device.type):
            return (self.dropout(out) if mask is None else out * mask) + position
        return torch.addcmul(position, out, mask)

    def _head(self, hidden: Tensor, folded: Folded, linear: Linear, mask: Tensor | None = None) -> Tensor:
        """The decoder after the integration MLP's first layer (..., H) -> (..., E): the MLP's activation and
        dropout (by ``mask`` if given), then its last layer and the output layer, folded or as two."""
        for layer in list(self.integrate)[1:-1]:
            hidden = hidden * mask if isinstance(layer, nn.Dropout) and mask is not None else layer(hidden)
        if folded.head is not None:
            return linear(hidden, folded.head, folded.head_bias)
        last = self.integrate[-1]
        return linear(linear(hidden, last.weight, last.bias), self.out.weight, self.out.bias)

    def fold(self, attn_state: Any, need_weights: bool = False) -> Folded:
        """The decode's folded weights (``Folded``), made once per decode, with autograd: the gradients of
        the weights they come from flow through the products. The integration MLP's last layer and the output
        layer as one map (unless ``fold_head`` is off); the backend's output weight multiplied into the
        integration layer's first matrix (``AttentionBackend.output_weight``), unless the backend declares
        none or attention weights are asked for (the backend's ``step`` returns them with its own output)."""
        head: Tensor | None = None
        head_bias: Tensor | None = None
        weight: Tensor | None = None
        bias: Tensor | None = None
        if self.fold_head:
            last, out = self.integrate[-1], self.out
            assert isinstance(last, nn.Linear) and last.bias is not None and out.bias is not None
            head, head_bias = out.weight @ last.weight, torch.addmv(out.bias, out.weight, last.bias)
        name = type(self.attention).output_weight if self.attention is not None else None
        if name is not None and not need_weights:
            first, first_bias, H = self.integrate[0].weight, self.integrate[0].bias, self.hidden_size
            assert isinstance(first, Tensor) and isinstance(first_bias, Tensor)  # (H, 2H): [query | context part]
            bias = first_bias
            weight = torch.cat([first[:, :H], first[:, H:] @ getattr(self.attention, name).weight], 1)
        return Folded(attn_state, weight, bias, head, head_bias)

    def run(
        self, inputs: Tensor, state: Any, attn_state: Folded, positions: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Any, Tensor | None]:
        """Consecutive steps at once when their inputs are known: one RNN call, their queries attend together.

        Args:
            inputs: (B, n, E), the inputs of n consecutive steps; positions: (n, H), theirs.

        Returns:
            Outputs (B, n, E), the RNN state after the last step, weights (B, heads, n, S) if asked.
        """
        out, state = self.rnn(self.input_proj(inputs), state)  # (B, n, H)
        y, weights = self._parallel_tail(out, attn_state, positions, need_weights)
        return y, state, weights

    def _parallel_tail(
        self, out: Tensor, folded: Folded, positions: Tensor, need_weights: bool, masks: Masks = NO_MASKS
    ) -> tuple[Tensor, Tensor | None]:
        """``run`` after its RNN, for every step at once: RNN outputs (B, n, H) -> outputs (B, n, E)."""
        queries = self._query(out, positions, masks[0])
        weights = None
        if folded.weight is not None:
            assert self.attention is not None
            joined = torch.cat([queries, self.attention.parallel_context(queries, folded.state)], dim=-1)
            hidden = F.linear(joined, folded.weight, folded.bias)
        else:
            if self.attention is not None:
                context, weights = self.attention.parallel(queries, folded.state, need_weights)
                queries = torch.cat([queries, context], dim=-1)
            hidden = self.integrate[0](queries)
        return self._head(hidden, folded, F.linear, masks[1]), weights

    def engine_for(self, device: torch.device) -> str:
        """The engine (see ``ENGINES``) the sequential decode uses on ``device``."""
        if self.engine is not None:
            return self.engine
        return "stretches" if device.type == "cpu" else "steps"

    @property
    def can_run_parallel(self) -> bool:
        return self.attention is None or self.attention.capabilities.parallel_decode

    def forward(
        self,
        z: Tensor,
        memory: Tensor,
        key_mask: Tensor,
        length: int,
        targets: Tensor | None = None,
        teacher_forcing: float = 0.0,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        B = z.shape[0]
        state = self.initial_state(z)
        prepared = self.attention.prepare(memory, key_mask) if self.attention is not None else None
        attn_state = self.fold(prepared, need_weights)
        positions = sinusoids(length, self.hidden_size, z.device).to(memory.dtype)
        start = self.start.to(memory.dtype).expand(B, -1)
        forced = targets is not None and teacher_forcing > 0.0
        if forced and teacher_forcing >= 1.0 and self.can_run_parallel:
            assert targets is not None
            inputs = torch.cat([start.unsqueeze(1), targets[:, : length - 1]], dim=1)  # right-shifted
            out, _, attention = self.run(inputs, state, attn_state, positions, need_weights)
            return out, attention
        # One coin per step for the whole batch (as the original): True = feed the target. Drawn on the
        # model's device and applied with torch.where, so a captured CUDA graph draws fresh coins per replay.
        coins = torch.rand(length, device=z.device) < teacher_forcing if forced else None
        stretches = self.engine_for(z.device) == "stretches"
        single = self.cell_step if stretches else self.step
        step = self.attention.wrap_step(single) if self.attention is not None else (self.compiled_step or single)
        grad = torch.is_grad_enabled()
        replay = self.step_form == "replay" and not need_weights and (self.can_run_parallel or not grad)
        if step is single and not stretches and replay:  # without autograd, then replayed (core/_replay.py)
            return replay_decode(self, state, attn_state, start, targets, coins, positions), None
        if step is single and grad:
            # The decoder's own step, differentiated step by step: its linear layers' weight gradients
            # are summed once after the last step's backward, not at every step (core/_deferred.py).
            step = functools.partial(single, linear=DeferredLinears())
        if coins is not None and targets is not None and stretches and self.can_run_parallel:
            inputs = torch.cat([start.unsqueeze(1), targets[:, : length - 1]], dim=1)  # right-shifted
            return decode_stretches(self.run, step, inputs, coins, state, attn_state, positions, need_weights)
        outputs, weights = [], []
        inp = start
        for t in range(length):
            y, state, w = step(inp, state, attn_state, positions[t], need_weights)
            outputs.append(y)
            if w is not None:
                weights.append(w)
            if t + 1 < length:
                if coins is not None and targets is not None:
                    inp = torch.where(coins[t + 1], targets[:, t], y.detach())
                else:
                    inp = y.detach()
        return torch.stack(outputs, dim=1), (torch.stack(weights, dim=2) if weights else None)


class Autoencoder(nn.Module):
    """Encode a sequence of word vectors to z (and a memory), decode it back through an attention backend.

    Args:
        config: the model's hyperparameters.
        backend: an attention backend name (looked up among the registered plugins), a backend class,
            or None for 'naive'. Must be None when ``config.attention == 'none'``.
        engine: how the sequential decode runs: 'stretches' (each stretch of teacher-forced steps as one
            RNN call with its queries attending at once, lone steps as cell arithmetic), 'steps' (one
            fused RNN call per step, coins on the device), or None (default): 'stretches' on CPU, 'steps'
            elsewhere (``Decoder.__init__``).
    """

    def __init__(
        self,
        config: ModelConfig,
        backend: str | type[AttentionBackend] | None = None,
        *,
        engine: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        attention = None
        if config.attention == "none":
            if backend not in (None, "none"):
                raise ConfigError(f"config.attention is 'none', so no backend can be used (got {backend!r})")
        else:
            cls = resolve_backend(backend or "naive", config)
            attention = cls(config.hidden_size, config.num_heads)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, attention, engine)

    @property
    def backend(self) -> str:
        """Name of the attention backend in use ('none' for the no-attention baseline)."""
        return self.decoder.attention.name if self.decoder.attention is not None else "none"

    @property
    def layout(self) -> str:
        """Parameter layout of the attention backend ('none' without attention)."""
        attention = self.decoder.attention
        return attention.capabilities.layout if attention is not None else "none"

    def forward(
        self, x: Tensor, mask: Tensor, teacher_forcing: float = 0.0, need_weights: bool = False
    ) -> AutoencoderOutput:
        """Reconstruct ``x``.

        Args:
            x: word vectors (B, T, E).
            mask: (B, T) bool, True at real tokens, left-aligned.
            teacher_forcing: probability that a decoder step reads the true previous token instead of its
                own previous output; 1.0 uses the parallel path where the backend has one, 0.0 is
                fully autoregressive.
            need_weights: also return attention weights (B, heads, T, T).
        """
        if x.dim() != 3 or x.shape[-1] != self.config.embed_dim or x.shape[:2] != mask.shape:
            raise ValueError(
                f"expected x (B, T, {self.config.embed_dim}) and mask (B, T); "
                f"got {tuple(x.shape)} and {tuple(mask.shape)}"
            )
        lengths = lengths_of(mask)
        z, memory = self.encoder(x, lengths)
        recon, weights = self.decoder(
            z, memory, mask, x.shape[1], targets=x, teacher_forcing=teacher_forcing, need_weights=need_weights
        )
        return AutoencoderOutput(recon, z, weights)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def to_backend(self, backend: str | type[AttentionBackend]) -> Autoencoder:
        """Switch this live model to another attention backend, converting its attention parameters.

        The new attention module gets the old one's parameters converted to its layout through the
        backend table's converters (exact), on the same device and dtype, in the same training mode.
        Optimizers holding the old parameters must be rebuilt. Returns ``self``.

        Raises:
            ConfigError: the model has no attention (``config.attention == 'none'``).
            UnknownBackendError: no backend has that name.
            CheckpointLayoutError: no conversion path between the two layouts.
        """
        old = self.decoder.attention
        if old is None:
            raise ConfigError(f"this model has no attention (config.attention is 'none'); cannot use {backend!r}")
        cls = resolve_backend(backend, self.config)
        # where the new module goes: like the old one's parameters, or the rest of the decoder if it has none
        reference: Tensor = next(old.parameters(), self.decoder.out.weight)
        new = cls(self.config.hidden_size, self.config.num_heads)
        state = old.state_dict()
        source, target = old.capabilities.layout, cls.capabilities.layout
        if source != target:
            state = convert_layout(state, source, target)
        new.to(device=reference.device, dtype=reference.dtype)
        new.load_state_dict(state, strict=True)
        new.train(old.training)
        self.decoder.attention = new
        return self
