"""The backend table core looks names up in: passive, owned by core, filled by a provider (the registry).

Core names no layer above it. ``Autoencoder(config, backend="cached-decoder")``, ``to_backend``,
``load(path, backend=...)`` and the conformance kit look backends, layout converters and the hardware
probe up in :data:`TABLE`. If nothing has filled it yet, the first lookup loads the providers declared
in the entry-point group ``quatrain.providers``: each is a callable that takes the table and fills it.
quatrain's own pyproject declares the registry's provider there, so plain Python code works without
importing the registry first; the registry's ``set_registry`` empties the table, so that the next lookup
refills it from the registry set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs

from ._contract import AttentionBackend, Hardware
from ._errors import BackendUnavailableError, CheckpointLayoutError, PluginError, UnknownBackendError

if TYPE_CHECKING:
    from torch import Tensor

    from ._config import ModelConfig

PROVIDERS_GROUP = "quatrain.providers"
"""Entry-point group of callables ``provide(table: BackendTable) -> None`` that fill the table."""

Convert = Callable[[Mapping[str, "Tensor"], str, str], dict[str, "Tensor"]]


@attrs.define
class BackendTable:
    """What core needs from the layer that knows the plugins; every slot is filled from outside."""

    backends: dict[str, type[AttentionBackend]] = attrs.field(factory=dict)
    """Backend classes by name."""
    convert: Convert | None = None
    """``convert(attention_state, source_layout, target_layout)``: exact conversion between layouts."""
    hardware: Callable[[], Hardware] | None = None
    """The hardware probe backends' ``unsupported_reasons`` read."""
    select: Callable[[ModelConfig], str] | None = None
    """The 'auto' slot: a concrete backend name for a model of this config (never 'auto')."""
    explain: Callable[[str], str] | None = None
    """The message for an unknown name (it may name broken or disabled plugins)."""
    filled: bool = False
    """Whether a provider has filled it (an empty table that was filled stays empty)."""

    def fill(
        self,
        *,
        backends: Mapping[str, type[AttentionBackend]],
        convert: Convert,
        hardware: Callable[[], Hardware],
        select: Callable[[ModelConfig], str] | None = None,
        explain: Callable[[str], str] | None = None,
    ) -> None:
        """Replace every slot; what a provider calls."""
        self.backends = dict(backends)
        self.convert, self.hardware, self.select, self.explain = convert, hardware, select, explain
        self.filled = True

    def clear(self) -> None:
        """Empty every slot, so the next lookup asks the providers again."""
        self.backends, self.convert, self.hardware, self.select, self.explain = {}, None, None, None, None
        self.filled = False


TABLE = BackendTable()
"""The process-wide table."""

_selecting: list[object] = []  # configs being auto-selected now, to refuse a selector that recurses
_filling: list[str] = []  # providers filling the table now, to refuse a lookup from inside one


def _ensure_filled() -> BackendTable:
    if TABLE.filled:
        return TABLE
    if _filling:
        raise PluginError("a backend was looked up while the backend table was being filled (a plugin built a model?)")
    # quatrain's own provider first, then any other distribution's, by name: the first that fills the table wins
    providers = sorted(
        metadata.entry_points(group=PROVIDERS_GROUP),
        key=lambda ep: (getattr(ep.dist, "name", None) != "quatrain", ep.name),
    )
    for ep in providers:
        _filling.append(ep.name)
        try:
            provide: Any = ep.load()
            provide(TABLE)
        except PluginError:
            raise
        except Exception as e:
            raise PluginError(f"backend provider {ep.name!r} ({ep.value}) failed: {type(e).__name__}: {e}") from e
        finally:
            _filling.pop()
        if TABLE.filled:
            return TABLE
    raise UnknownBackendError(
        f"no backend provider filled quatrain's backend table (entry-point group {PROVIDERS_GROUP!r}: "
        f"{', '.join(ep.name for ep in providers) or 'none'}); is quatrain installed (pip install -e .)?"
    )


def lookup_backend(name: str) -> type[AttentionBackend]:
    """The backend class registered as ``name`` (not 'auto').

    Raises:
        UnknownBackendError: no backend has that name; the message lists the known ones.
    """
    table = _ensure_filled()
    if name in table.backends:
        return table.backends[name]
    if table.explain is not None:
        raise UnknownBackendError(table.explain(name))
    raise UnknownBackendError(f"unknown backend {name!r}; registered: {', '.join(sorted(table.backends)) or 'none'}")


def resolve_backend(backend: str | type[AttentionBackend], config: ModelConfig) -> type[AttentionBackend]:
    """The backend class for a name ('naive', 'auto', ...) or the class itself.

    'auto' asks the table's selector for a concrete name once; a selector that asks for 'auto' again
    while it runs (directly or by building an ``Autoencoder(..., backend="auto")``) is refused.

    Raises:
        TypeError: a class that is not an AttentionBackend.
        UnknownBackendError: an unknown name.
        BackendUnavailableError: 'auto' with no selector, or a selector that recursed or returned 'auto'.
    """
    if isinstance(backend, type):
        if not issubclass(backend, AttentionBackend):
            raise TypeError(f"{backend!r} is not an AttentionBackend subclass")
        return backend
    if backend != "auto":
        return lookup_backend(backend)
    table = _ensure_filled()
    if table.select is None:
        raise BackendUnavailableError("backend 'auto' needs a selector; the backend table's provider gave none")
    if _selecting:
        raise BackendUnavailableError("backend 'auto' was asked for while 'auto' was being selected (a loop)")
    _selecting.append(config)
    try:
        name = table.select(config)
    finally:
        _selecting.pop()
    if name == "auto":
        raise BackendUnavailableError("the selector for 'auto' returned 'auto'")
    return lookup_backend(name)


def convert_layout(state: Mapping[str, Tensor], source: str, target: str) -> dict[str, Tensor]:
    """Convert an attention state dict from layout ``source`` to ``target`` with the table's converters.

    Raises:
        CheckpointLayoutError: unknown layouts or no conversion path.
    """
    if source == target:
        return dict(state)
    table = _ensure_filled()
    if table.convert is None:
        raise CheckpointLayoutError(f"no layout converters are known (converting {source!r} to {target!r})")
    return table.convert(state, source, target)


def hardware() -> Hardware:
    """This machine, as the table's hardware probe sees it."""
    table = _ensure_filled()
    if table.hardware is None:
        raise BackendUnavailableError("the backend table's provider gave no hardware probe")
    return table.hardware()
