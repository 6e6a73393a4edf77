"""Convert a checkpoint for another backend's layout, and prove the conversion: what ``quatrain convert`` runs.

Sits on discovery (backends and converters) and ``_check`` (the one comparison rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import quatrain
from quatrain import STANDARD_KEYS, Autoencoder, CheckpointLayoutError
from quatrain._checkpoint import ATTENTION_PREFIX, convert_attention_tensors

from ._check import REFERENCE, check_against
from ._discovery import Registry, get_registry

PROBE_LENGTHS = (12, 9, 5, 1, 0)
"""Rows of the probe batch: full, padded, a single token, and an empty row (all keys masked)."""


def prove_conversion(
    source_path: Path, target: str, *, seed: int = 0, registry: Registry | None = None
) -> tuple[Autoencoder, dict[str, Any]]:
    """Load ``source_path`` converted for backend ``target`` and check the conversion.

    Returns the converted model and the evidence: the converter path, whether converting back gives
    the original attention tensors bit for bit, and the one comparison rule (registry/_check.py) on a
    seeded probe batch: outputs (teacher forcing 1.0 and 0.0) and gradients of the converted model
    against the model as saved, in float64 (the golden) and in its own dtype (the reference).

    Raises:
        QuatrainError: unknown backend, no conversion path, unreadable checkpoint, failed proof.
    """
    import safetensors.torch

    registry = registry or get_registry()
    entry = registry.backend(target)  # unknown names raise with the registered ones listed
    info = quatrain.read_info(source_path)
    source_layout, target_layout = info.layout, entry.cls.capabilities.layout
    if info.backend == "none":
        raise CheckpointLayoutError(f"{str(source_path)!r} has no attention (a 'none' model); nothing to convert")
    path = registry.layouts.path(source_layout, target_layout) if source_layout != target_layout else [source_layout]
    converter = " -> ".join(path)

    original = safetensors.torch.load_file(str(source_path))
    converted = convert_attention_tensors(original, source_layout, target_layout)
    back = convert_attention_tensors(converted, target_layout, source_layout)
    attention_keys = [k for k in original if k.startswith(ATTENTION_PREFIX)]
    identical = set(back) == set(original) and all(
        back[k].dtype == original[k].dtype and torch.equal(back[k], original[k]) for k in attention_keys
    )
    if not identical:
        raise CheckpointLayoutError(f"converting {converter} and back does not give the original tensors bit for bit")

    # The reference is the model as saved, on its own backend if installed, else on naive (any layout converts).
    reference_backend = info.backend if info.backend in registry.backends else REFERENCE
    reference = quatrain.load(source_path, backend=reference_backend).eval()
    model = quatrain.load(source_path, backend=target).eval()
    generator = torch.Generator().manual_seed(seed)
    T, E = max(PROBE_LENGTHS), info.config.embed_dim
    x = torch.randn(len(PROBE_LENGTHS), T, E, generator=generator)
    mask = torch.arange(T)[None, :] < torch.tensor(PROBE_LENGTHS)[:, None]

    def to_target(state: Any) -> Any:
        return registry.convert_layout(state, reference.layout, model.layout)

    # The one rule: the source model in float64 is the golden, in its own dtype the reference.
    comparison = check_against(reference, model, x, mask, convert=to_target)
    if not comparison.passed:
        raise CheckpointLayoutError(
            f"converted model differs from {str(source_path)!r}: " + "; ".join(q.line() for q in comparison.failures)
        )
    worst = comparison.worst
    evidence = {
        "converter": converter,
        "plugins": sorted({c.plugin for c in registry.layouts.converters if {c.source, c.target} <= set(path)}),
        "inverse_bit_identical": identical,
        "probe": {
            "batch": list(PROBE_LENGTHS),
            "teacher_forcing": [1.0, 0.0],
            "reference_backend": reference_backend,
            "worst_ratio": comparison.worst_ratio,
            "worst": worst.line() if worst is not None else "",
            "quantities": len(comparison.quantities),
        },
    }
    return model, evidence


def convert_checkpoint(
    source: Path, target: str, output: Path, *, seed: int = 0, registry: Registry | None = None
) -> dict[str, Any]:
    """Prove the conversion of ``source`` for backend ``target`` (``prove_conversion``), then write ``output``.

    The output keeps the source's own metadata (training recipe, metrics...) and records
    ``converted_from``, ``converter``, ``source_backend``, ``source_layout`` and ``conversion_check``.
    The write is atomic. Returns the report ``quatrain convert --json`` prints.
    """
    info = quatrain.read_info(source)
    model, evidence = prove_conversion(source, target, seed=seed, registry=registry)
    extra: dict[str, Any] = {}
    for key, value in info.metadata.items():  # keep the source's own records
        if key not in STANDARD_KEYS:
            try:
                extra[key] = json.loads(value)
            except json.JSONDecodeError:
                extra[key] = value
    extra |= {
        "converted_from": str(source.resolve()),
        "converter": evidence["converter"],
        "source_backend": info.backend,
        "source_layout": info.layout,
        "conversion_check": {"inverse_bit_identical": True, **evidence["probe"]},
    }
    quatrain.save(model, output, extra=extra)
    return {
        "input": str(source),
        "output": str(output),
        "source_backend": info.backend,
        "target_backend": target,
        "source_layout": info.layout,
        "target_layout": model.layout,
        **evidence,
    }
