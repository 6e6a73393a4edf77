"""Fills core's backend table from the process-wide registry: the provider quatrain's pyproject declares.

Core (``quatrain._resolve``) owns the table and names nothing above it; on its first lookup it loads
the callables in the entry-point group ``quatrain.providers``, and quatrain declares this module's
``provide`` there. It sits at the top of registry/ because the 'auto' slot needs selection.
"""

from __future__ import annotations

from quatrain import ModelConfig
from quatrain._resolve import BackendTable

from ._discovery import get_registry
from ._hardware import detect_hardware
from ._select import job_for_model, select_backend


def auto_backend(config: ModelConfig) -> str:
    """What ``Autoencoder(config, backend="auto")`` runs: ``quatrain select``'s choice for a training job
    on the best device here, float32 (cached per hardware, versions and job)."""
    return select_backend(job_for_model(config)).backend


def provide(table: BackendTable) -> None:
    """Fill ``table`` from ``get_registry()``: its backends, converters, the hardware probe and 'auto'."""
    registry = get_registry()
    table.fill(
        backends={name: entry.cls for name, entry in registry.backends.items()},
        convert=registry.convert_layout,
        hardware=detect_hardware,
        select=auto_backend,
        explain=registry.unknown_backend,
    )
