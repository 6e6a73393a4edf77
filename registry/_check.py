"""The model-level correctness check behind ``select``, ``bench`` and ``convert``: the one rule on a probe batch.

Three models hold the same weights: the reference (``naive``) in float64 (the golden), the reference in the
job's dtype, and the candidate in the job's dtype (the weights converted to its layout). Each runs a probe
batch with a full row, a padded row, a one-token row and an empty row; outputs at teacher forcing 1.0 and
0.0 (autoregressive) and the gradients of the input and of every parameter (the reference's attention
gradients converted to the candidate's layout) go through ``quatrain._compare.compare``. float32 runs with
TF32 off. Imports: core and discovery only (select and bench sit above it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from quatrain import Autoencoder, ModelConfig, reconstruction_loss
from quatrain._checkpoint import ATTENTION_PREFIX
from quatrain._compare import Comparison, compare, full_precision, without_kinks

from ._discovery import Registry

REFERENCE = "naive"
PROBE_ROWS = ("full", "padded", "one token", "empty")

Convert = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
"""Attention tensors from the reference's layout to the candidate's."""


def probe_batch(
    config: ModelConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Word vectors (4, T, E), T = config.max_len, rounded to ``dtype``, and the mask of ``PROBE_ROWS``."""
    generator = torch.Generator().manual_seed(seed)
    T = config.max_len
    lengths = torch.tensor([T, max(1, T // 2), 1, 0])
    x = torch.randn(len(lengths), T, config.embed_dim, generator=generator)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return x.to(device=device, dtype=dtype), mask.to(device)


def probe(
    model: Autoencoder,
    x: Tensor,
    mask: Tensor,
    convert: Convert | None = None,
    gradients: bool = True,
    autocast: bool = False,
) -> dict[str, Tensor | None]:
    """Outputs (tf 1.0 and 0.0) and gradients (input, every parameter) in eval mode, inputs cast to the model's dtype.

    ``convert``: maps the attention parameters' gradients to another layout (the golden and the reference's,
    to the candidate's). ``gradients``: False for a backend that cannot train (outputs only). ``autocast``:
    the forward passes under bf16 autocast (what ``--precision bf16`` runs).
    """
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    found: dict[str, Tensor | None] = {}
    cast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast)
    # cuDNN's RNN has no backward in eval mode; torch's own RNN kernels do (for all three models alike).
    with torch.backends.cudnn.flags(enabled=False), cast:
        try:
            xi = x.detach().to(dtype, copy=True).requires_grad_(gradients)
            model.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(gradients):
                out = model(xi, mask, teacher_forcing=1.0).reconstruction
            found["output tf 1.0"] = out.detach()
            if not gradients:
                with torch.no_grad():
                    found["output tf 0.0"] = model(xi, mask, teacher_forcing=0.0).reconstruction
                return found
            reconstruction_loss(out, xi, mask).backward()
            found["grad input"] = xi.grad
            grads = {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in model.named_parameters()}
            attention: dict[str, Tensor | None] = {
                k[len(ATTENTION_PREFIX) :]: g for k, g in grads.items() if k.startswith(ATTENTION_PREFIX)
            }
            present = {k: g for k, g in attention.items() if g is not None}
            if convert is not None and present and len(present) == len(attention):
                attention = dict(convert(present))
            found |= {f"grad {k}": g for k, g in grads.items() if not k.startswith(ATTENTION_PREFIX)}
            found |= {f"grad {ATTENTION_PREFIX}{k}": g for k, g in attention.items()}
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                found["output tf 0.0"] = model(xi.detach(), mask, teacher_forcing=0.0).reconstruction
            return found
        finally:
            model.train(was_training)


def check_models(
    golden: Autoencoder,
    reference: Autoencoder,
    candidate: Autoencoder,
    x: Tensor,
    mask: Tensor,
    *,
    convert: Convert | None = None,
    autocast: bool = False,
) -> Comparison:
    """The one rule on three models that hold the same weights: golden (float64), reference and candidate.

    ``convert`` maps the reference's attention gradients to the candidate's layout (None: same layout).
    ``autocast``: reference and candidate run under bf16 autocast, judged at bfloat16's rounding.
    An approximate candidate (``exact=False``) has its declared tolerance added to every bound; one that
    cannot train (``training=False``) is compared on outputs only.
    """
    attention = candidate.decoder.attention
    caps = attention.capabilities if attention is not None else None
    tolerance = caps.tolerance if caps is not None and not caps.exact else 0.0
    gradients = caps is None or caps.training
    dtype = torch.bfloat16 if autocast else next(candidate.parameters()).dtype
    with full_precision():
        want = probe(golden, x, mask, convert, gradients)
        ref = probe(reference, x, mask, convert, gradients, autocast=autocast)
        got = probe(candidate, x, mask, gradients=gradients, autocast=autocast)
    return compare(
        want,
        ref,
        got,
        dtype=dtype,
        tolerance=tolerance,
        gradient_kind="model gradient",
        reference_name=reference.backend,
    )


def model_pair(
    config: ModelConfig, name: str, *, device: torch.device | str, dtype: torch.dtype, registry: Registry, seed: int = 0
) -> tuple[Autoencoder, Autoencoder, Convert]:
    """The reference and backend ``name`` holding the same weights, in ``dtype``, and the layout converter."""
    torch.manual_seed(seed)
    reference = Autoencoder(config, registry.backend(REFERENCE).cls)
    model = Autoencoder(config, registry.backend(name).cls)
    source, target = reference.layout, model.layout

    def convert(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return dict(state) if source == target else registry.convert_layout(state, source, target)

    state = reference.state_dict()
    attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in state.items() if k.startswith(ATTENTION_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(ATTENTION_PREFIX)}
    model.load_state_dict(rest | {ATTENTION_PREFIX + k: v for k, v in convert(attention).items()}, strict=True)
    return reference.to(device=device, dtype=dtype), model.to(device=device, dtype=dtype), convert


def check_backend_model(
    config: ModelConfig,
    name: str,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    registry: Registry,
    seed: int = 1,
) -> Comparison:
    """Backend ``name`` against naive on the probe batch of a model of ``config`` (what select checks)."""
    reference, model, convert = model_pair(config, name, device=device, dtype=dtype, registry=registry, seed=seed)
    x, mask = probe_batch(config, device, dtype, seed)
    return check_against(reference, model, x, mask, convert=convert)


def check_against(
    reference: Autoencoder,
    candidate: Autoencoder,
    x: Tensor,
    mask: Tensor,
    *,
    convert: Convert | None = None,
    autocast: bool = False,
) -> Comparison:
    """``candidate`` against ``reference`` (same weights, same dtype) by the one rule, on copies of both;
    ``autocast``: both under bf16 autocast.

    The golden is the reference in float64. The copies have their ReLUs made smooth
    (``quatrain._compare.without_kinks``); the models passed in are left as they are.
    """
    ref = without_kinks(copy.deepcopy(reference))
    return check_models(
        copy.deepcopy(ref).double(), ref, without_kinks(copy.deepcopy(candidate)), x, mask, convert=convert,
        autocast=autocast,
    )  # fmt: skip
