"""Turns a backend name into a backend class: the one place core defers to quatrain.registry.

Core never imports the registry at module level (the dependency runs cli -> registry -> core); a
name given to ``Autoencoder`` or ``load`` is looked up lazily here, at call time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._contract import AttentionBackend

if TYPE_CHECKING:
    from ._config import ModelConfig


def resolve_backend(backend: str | type[AttentionBackend], config: ModelConfig) -> type[AttentionBackend]:
    """The backend class for a name ('naive', 'auto', ...) or the class itself."""
    if isinstance(backend, type):
        if not issubclass(backend, AttentionBackend):
            raise TypeError(f"{backend!r} is not an AttentionBackend subclass")
        return backend
    registry = importlib.import_module("quatrain.registry")
    cls: type[AttentionBackend] = registry.backend_for(backend, config)
    return cls
