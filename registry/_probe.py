"""What a job may run here, and on what: eligibility, the variants a comparison or a timing builds, their batch.

It sits on discovery and ``_check`` (the reference's name); select and bench both sit on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from quatrain import AttentionBackend, Autoencoder, Hardware, ModelConfig, Reason
from quatrain._checkpoint import ATTENTION_PREFIX
from quatrain._compile import compile_decoder_step

from ._check import REFERENCE
from ._discovery import Registry

BASELINE = "none"
"""The variant without attention (``attention='none'``): the floor every backend is measured against."""
COMPILED_BASELINE = "none-compiled"
"""The same model with its whole decoder step under ``torch.compile``, as a backend that wraps the step
(``wraps_step``) runs it: the baseline such a backend is compared with, compiled against compiled."""


def wraps_step(cls: type[AttentionBackend]) -> bool:
    """Whether a backend runs the whole decoder step its own way (overrides ``wrap_step``, e.g. compiles it)."""
    return cls.wrap_step is not AttentionBackend.wrap_step


def eligibility_reasons(
    cls: type[AttentionBackend],
    hardware: Hardware,
    device: str,
    dtype: torch.dtype,
    *,
    training: bool | None = None,
    need_weights: bool = False,
    allow_approx: bool = True,
) -> list[Reason]:
    """The backend's own probe plus what the job needs; empty means it may compete."""
    reasons = list(cls.unsupported_reasons(hardware, device, dtype))
    caps = cls.capabilities
    if training is True and not caps.training:
        reasons.append(Reason("training", f"{cls.name} cannot train (no backward)", "use it with --infer"))
    if training is False and not caps.inference:
        reasons.append(Reason("inference", f"{cls.name} does not support inference"))
    if need_weights and not caps.returns_weights:
        reasons.append(Reason("weights", f"{cls.name} does not return attention weights"))
    if not allow_approx and not caps.exact:
        reasons.append(Reason("exact", f"{cls.name} approximates the attention function", "pass --allow-approx"))
    return reasons


def make_batch(
    config: ModelConfig, batch_size: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The benchmark's inputs: random word vectors (B, T, E), T = config.max_len, lengths in [T/2, T], row 0 full."""
    generator = torch.Generator().manual_seed(seed)
    T = config.max_len
    x = torch.randn(batch_size, T, config.embed_dim, generator=generator)
    lengths = torch.randint(max(1, T // 2), T + 1, (batch_size,), generator=generator)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return x.to(device=device, dtype=dtype), mask.to(device)


def build_variants(
    config: ModelConfig,
    names: Iterable[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    registry: Registry,
    seed: int = 0,
) -> dict[str, Autoencoder]:
    """One model per name (BASELINE for the no-attention model, COMPILED_BASELINE for it compiled), backends
    all holding naive's weights."""
    torch.manual_seed(seed)
    reference = Autoencoder(config, registry.backend(REFERENCE).cls)
    state = reference.state_dict()
    models: dict[str, Autoencoder] = {}
    for name in names:
        if name in (BASELINE, COMPILED_BASELINE):
            torch.manual_seed(seed)
            model = Autoencoder(config.evolve(attention="none"))
        else:
            model = Autoencoder(config, registry.backend(name).cls)
            attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in state.items() if k.startswith(ATTENTION_PREFIX)}
            converted = registry.convert_layout(attention, reference.layout, model.layout)
            rest = {k: v for k, v in state.items() if not k.startswith(ATTENTION_PREFIX)}
            model.load_state_dict({**rest, **{ATTENTION_PREFIX + k: v for k, v in converted.items()}}, strict=True)
        model = model.to(device=device, dtype=dtype)
        for module in model.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()  # one contiguous weight buffer for cuDNN, as after any .to()
        if name == COMPILED_BASELINE:
            model.decoder.compiled_step = compile_decoder_step(model.decoder)
        models[name] = model
    return models
