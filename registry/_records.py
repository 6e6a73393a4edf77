"""What discovery records: each plugin's status, each backend's origin, and backends known only by declaration."""

from __future__ import annotations

from typing import Any

import attrs

from quatrain import AttentionBackend, Capabilities


@attrs.frozen(kw_only=True)
class PluginRecord:
    """One plugin as discovery saw it."""

    name: str
    """Entry-point name (or the name it was registered under directly)."""
    module: str
    distribution: str | None
    version: str | None
    status: str
    """'ok', 'broken' or 'disabled'."""
    error: str | None = None
    hooks: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    """Zoo model cards it registered."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class BackendEntry:
    """A registered backend and where it came from."""

    name: str
    cls: type[AttentionBackend]
    plugin: str
    distribution: str | None
    version: str | None


@attrs.frozen(kw_only=True)
class DeclaredBackend:
    """A backend known only from its distribution's static declaration, because its plugin is broken."""

    name: str
    capabilities: Capabilities
    plugin: str
    distribution: str
    version: str | None
    error: str
    """Why its plugin did not load."""
