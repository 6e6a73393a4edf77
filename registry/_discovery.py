"""Plugin discovery: entry points in; tables of backends, layout converters and model cards out.

The bottom of registry/: it imports core and the leaves ``_cards`` and ``_layouts``, nothing else here.
Every hook is called through ``pm.hook`` (so ``QUATRAIN_TRACE_PLUGINS=1`` shows each call), one plugin
at a time, so that one broken plugin is recorded as broken while the rest keep working.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from quatrain import AttentionBackend, Capabilities, PluginError, UnknownBackendError, hookspecs
from quatrain._errors import PluginWarning
from quatrain._resolve import TABLE

from ._cards import ModelCard, make_card
from ._errors import UnknownModelError
from ._layouts import Converter, LayoutGraph
from ._records import BackendEntry, DeclaredBackend, PluginRecord

GROUP = hookspecs.PROJECT
OWN_DISTRIBUTION = "quatrain"
HOOKS = ("register_attention_backends", "register_layout_converters", "register_models")
"""quatrain's hooks, in the order each plugin's are called."""


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    names = {name.strip() for name in value.split(",") if name.strip()}
    if not names and variable == "QUATRAIN_LOAD_PLUGINS":
        warnings.warn(
            "QUATRAIN_LOAD_PLUGINS is set but empty, so no plugin loads (not even the built-in backends); "
            "unset it to load every plugin",
            PluginWarning,
            stacklevel=3,
        )
    return names


def _warn_unknown(variable: str, names: set[str] | None, known: Iterable[str]) -> None:
    unknown = sorted((names or set()) - set(known))
    if unknown:
        warnings.warn(
            f"{variable} names no plugin called {', '.join(map(repr, unknown))}; "
            f"plugins: {', '.join(sorted(known)) or 'none'}",
            PluginWarning,
            stacklevel=3,
        )


class Registry:
    """Everything the loaded plugins contributed: backends, layout converters, model cards, plugins' status."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.backends: dict[str, BackendEntry] = {}
        self.models: dict[str, ModelCard] = {}
        self.layouts = LayoutGraph()
        self.plugins: dict[str, PluginRecord] = {}
        self.declared: dict[str, DeclaredBackend] = {}
        """Backends that a broken plugin's distribution declares statically (group ``quatrain.capabilities``)."""

    def backend(self, name: str) -> BackendEntry:
        """The entry for ``name``; unknown names get an error listing the known ones and broken plugins."""
        if name in self.backends:
            return self.backends[name]
        raise UnknownBackendError(self.unknown_backend(name))

    def unknown_backend(self, name: str) -> str:
        """Why ``name`` is not a backend here: the registered names, and broken or disabled plugins."""
        message = f"unknown backend {name!r}; registered: {', '.join(sorted(self.backends)) or 'none'}"
        broken = [p.name for p in self.plugins.values() if p.status == "broken"]
        disabled = [p.name for p in self.plugins.values() if p.status == "disabled"]
        if name in disabled:
            message = f"backend {name!r} is disabled (QUATRAIN_DISABLE_PLUGINS)"
        elif broken:
            message += f" (broken plugins: {', '.join(broken)}; see 'quatrain doctor')"
        return message

    def card(self, name: str) -> ModelCard:
        """The model card registered as ``name``; unknown names get an error listing the known ones."""
        if name not in self.models:
            raise UnknownModelError(f"no model card {name!r}; cards: {', '.join(sorted(self.models)) or 'none'}")
        return self.models[name]

    def convert_layout(self, state: Any, source: str, target: str) -> Any:
        return self.layouts.convert(state, source, target)


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with quatrain's hook specs and no plugins."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("QUATRAIN_TRACE_PLUGINS"):

        def before(hook_name: str, impls: Any, kwargs: Any) -> None:
            print(f"quatrain: calling {hook_name} on {[i.plugin_name for i in impls]}", file=sys.stderr)

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            print(f"quatrain: {hook_name} done", file=sys.stderr)

        pm.add_hookcall_monitoring(before, after)
    return pm


def _entry_points() -> list[metadata.EntryPoint]:
    """quatrain's entry points, the project's own first so built-ins keep their names on a clash."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    own = [ep for ep in found.values() if ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION]
    return own + sorted((ep for ep in found.values() if ep not in own), key=lambda ep: ep.name)


def _constant(obj: object) -> Callable[[], object]:
    try:
        hash(obj)
    except TypeError:  # pluggy's subset_hook_caller keeps plugins in a set: hold the hooks in a module instead
        proxy = ModuleType(getattr(obj, "__name__", type(obj).__name__))
        proxy.__dict__.update({k: v for k, v in vars(obj).items() if not k.startswith("__")})
        obj = proxy
    return lambda: obj


def _one_line(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    text = "; ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _record(name: str, module: str, dist: Any, status: str, **fields: Any) -> PluginRecord:
    version = dist.version if dist else None
    return PluginRecord(name=name, module=module, distribution=dist.name if dist else None, version=version,
                        status=status, **fields)  # fmt: skip


def _escapes(error: BaseException) -> bool:
    """Whether ``error`` must leave discovery: a Ctrl-C does; a plugin's ``sys.exit()`` or other escape does not."""
    return isinstance(error, KeyboardInterrupt)


def load_registry(
    *,
    entry_points: bool = True,
    plugins: Iterable[tuple[str, ModuleType | object]] = (),
    disabled: Iterable[str] | None = None,
    strict: bool | None = None,
) -> Registry:
    """Discover plugins and collect what they register.

    Args:
        entry_points: load plugins from the ``quatrain`` entry-point group.
        plugins: (name, module-or-object) pairs to register directly (tests, embedding applications).
        disabled: plugin names not to load; default from ``QUATRAIN_DISABLE_PLUGINS`` (comma-separated).
        strict: raise on the first broken plugin; default from ``QUATRAIN_STRICT_PLUGINS``.

    A plugin that fails to import, to validate or to register is recorded as broken with its error;
    every other plugin still loads. That includes a plugin that calls ``sys.exit()`` or raises any other
    ``BaseException`` but a Ctrl-C (``KeyboardInterrupt`` still stops the program).

    Warns (``quatrain.PluginWarning``) when ``QUATRAIN_LOAD_PLUGINS`` is set but empty, and when the
    load or disable list names a plugin that does not exist.
    """
    blocked = set(disabled) if disabled is not None else (_env_names("QUATRAIN_DISABLE_PLUGINS") or set())
    allowed = _env_names("QUATRAIN_LOAD_PLUGINS")  # an allow-list; empty means none
    if strict is None:
        strict = os.environ.get("QUATRAIN_STRICT_PLUGINS", "") not in ("", "0")
    pm = make_plugin_manager()
    registry = Registry(pm)

    def broken(name: str, module: str, dist: Any, error: BaseException | str) -> None:
        message = error if isinstance(error, str) else _one_line(error)
        registry.plugins[name] = _record(name, module, dist, "broken", error=message)
        if strict:
            raise PluginError(f"plugin {name!r} ({module}) is broken: {message}")

    candidates: list[tuple[str, str, Any, Callable[[], object]]] = []
    if entry_points:
        for ep in _entry_points():
            candidates.append((ep.name, ep.value, ep.dist, ep.load))
    for name, obj in plugins:
        candidates.append((name, getattr(obj, "__name__", repr(obj)), None, _constant(obj)))
    names = [name for name, *_ in candidates]
    _warn_unknown("QUATRAIN_DISABLE_PLUGINS" if disabled is None else "the disabled plugins", blocked, names)
    _warn_unknown("QUATRAIN_LOAD_PLUGINS", allowed, names)

    for name, module, dist, load in candidates:
        if name in blocked or (allowed is not None and name not in allowed):
            pm.set_blocked(name)
            registry.plugins[name] = _record(name, module, dist, "disabled")
            continue
        try:
            plugin = load()
            pm.register(plugin, name=name)
            unknown = sorted(c.name for c in pm.get_hookcallers(plugin) or [] if not c.has_spec())
            if unknown:
                raise PluginError(
                    f"implements unknown hook(s) {', '.join(unknown)}; quatrain's hooks: {', '.join(HOOKS)}"
                )
        except BaseException as e:  # an import or validation error in someone else's code, even sys.exit()
            if _escapes(e):
                raise
            if pm.has_plugin(name):  # pluggy keeps a plugin whose hook failed validation; drop it
                pm.unregister(name=name)
            broken(name, module, dist, e)
            continue
        _collect(registry, name, module, dist, broken)
    if entry_points:
        _declare_broken(registry)
    return registry


CAPABILITIES_GROUP = f"{GROUP}.capabilities"


def _declare_broken(registry: Registry) -> None:
    """Read the static capability records of backends whose plugin is broken.

    A distribution may declare ``backend-name = "light.module:CAPABILITIES"`` in the entry-point group
    ``quatrain.capabilities`` (a module that imports nothing but quatrain), so that ``quatrain backends``
    can still say what a backend is while its plugin fails to import.
    """
    broken = {p.distribution: p for p in registry.plugins.values() if p.status == "broken" and p.distribution}
    if not broken:
        return
    for ep in metadata.entry_points(group=CAPABILITIES_GROUP):
        record = broken.get(ep.dist.name if ep.dist else None)  # type: ignore[arg-type]  # None never matches
        if record is None or ep.name in registry.backends or ep.name in registry.declared:
            continue
        try:
            capabilities = ep.load()
        except BaseException as e:  # a broken declaration of a broken plugin: nothing more to show
            if _escapes(e):
                raise
            continue
        if isinstance(capabilities, Capabilities):
            registry.declared[ep.name] = DeclaredBackend(
                name=ep.name, capabilities=capabilities, plugin=record.name,
                distribution=record.distribution or "", version=record.version, error=record.error or "",
            )  # fmt: skip


def _collect(registry: Registry, name: str, module: str, dist: Any, broken: Callable[..., None]) -> None:
    """Call one plugin's hooks and record what it registered; on any error, undo and mark it broken."""
    plugin = registry.pm.get_plugin(name)
    hooks = tuple(sorted(caller.name for caller in registry.pm.get_hookcallers(plugin) or []))
    backends: list[BackendEntry] = []
    converters: list[Converter] = []
    cards: list[ModelCard] = []

    def register_backend(cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, AttentionBackend)):
            raise PluginError(f"registered {cls!r}, which is not an AttentionBackend subclass")
        for attr in ("name", "capabilities"):
            if not hasattr(cls, attr):
                raise PluginError(f"backend class {cls.__qualname__} does not set {attr!r}")
        clash = registry.backends.get(cls.name) or next((b for b in backends if b.name == cls.name), None)
        if clash is not None:
            raise PluginError(f"backend name {cls.name!r} is registered by both {clash.plugin!r} and {name!r}")
        backends.append(
            BackendEntry(
                name=cls.name,
                cls=cls,
                plugin=name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
        )

    def register_converter(source: str, target: str, forward: Any, inverse: Any) -> None:
        converters.append(Converter(source, target, forward, inverse, plugin=name))

    def register_model(card_name: str, **fields: Any) -> None:
        card = make_card(card_name, plugin=name, distribution=dist.name if dist else None, **fields)
        clash = registry.models.get(card.name) or next((c for c in cards if c.name == card.name), None)
        if clash is not None:
            raise PluginError(f"model card {card.name!r} is registered by both {clash.plugin!r} and {name!r}")
        cards.append(card)

    register = {
        "register_attention_backends": register_backend,
        "register_layout_converters": register_converter,
        "register_models": register_model,
    }
    others = [p for p in registry.pm.get_plugins() if p is not plugin]
    try:
        for hook in HOOKS:
            if hook in hooks:  # this plugin's implementation alone, through pm.hook (traced, validated)
                registry.pm.subset_hook_caller(hook, remove_plugins=others)(register=register[hook])
        registry.layouts.check(converters)
    except BaseException as e:  # someone else's code: record it, keep the rest working (sys.exit() too)
        if _escapes(e):
            raise
        registry.pm.unregister(name=name)
        broken(name, module, dist, e)
        return
    for converter in converters:
        registry.layouts.add(converter)
    for entry in backends:
        registry.backends[entry.name] = entry
        registry.layouts.add_layout(entry.cls.capabilities.layout)
    for card in cards:
        registry.models[card.name] = card
    registry.plugins[name] = _record(
        name,
        module,
        dist,
        "ok",
        hooks=hooks,
        backends=tuple(b.name for b in backends),
        models=tuple(c.name for c in cards),
    )


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = load_registry()
    return _default


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (None: rediscover on next use). For tests and embedders.

    Core's backend table is emptied too, so its next lookup refills it from this registry.
    """
    global _default
    _default = registry
    TABLE.clear()


def get_cards() -> dict[str, ModelCard]:
    """Every model card the loaded plugins registered, by name."""
    return dict(get_registry().models)


def get_card(name: str) -> ModelCard:
    """The card registered as ``name``; unknown names get an error listing the known ones."""
    return get_registry().card(name)


def convert_layout(state: Any, source: str, target: str) -> Any:
    """Convert an attention state dict between layouts with the process-wide registry's converters."""
    return get_registry().convert_layout(state, source, target)
