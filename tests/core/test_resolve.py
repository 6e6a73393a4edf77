"""Core's backend table: filled by the registry's provider on first use, or by whoever sets it; 'auto' cannot loop."""

from __future__ import annotations

import subprocess
import sys

import pytest

import quatrain
from quatrain import BackendUnavailableError, PluginError, UnknownBackendError
from quatrain._resolve import TABLE, resolve_backend
from quatrain.registry import load_registry, set_registry


def _fill(**slots):
    from quatrain.plugins.naive import NaiveAttention
    from quatrain.registry import detect_hardware

    slots.setdefault("backends", {"mine": NaiveAttention})
    slots.setdefault("convert", lambda state, source, target: dict(state))
    slots.setdefault("hardware", detect_hardware)
    TABLE.fill(**slots)


def test_plain_python_finds_backends_through_the_declared_provider():
    """A fresh interpreter that never imports quatrain.registry itself still resolves names."""
    code = (
        "import sys, quatrain\n"
        "c = quatrain.ModelConfig.preset('tiny')\n"
        "m = quatrain.Autoencoder(c, backend='cached-decoder')\n"
        "print(m.backend, 'quatrain.registry' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cached-decoder", "True"]  # loaded by the provider, not by core's code


def test_a_filled_table_is_what_core_looks_names_up_in(tiny):
    _fill()
    assert quatrain.Autoencoder(tiny, backend="mine").backend == "naive"
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'cached-decoder'; registered: mine"):
        quatrain.Autoencoder(tiny, backend="cached-decoder")


def test_set_registry_refills_the_table_from_that_registry(tiny):
    import quatrain.plugins.naive as naive

    set_registry(load_registry(entry_points=False, plugins=[("only-naive", naive)]))
    assert quatrain.Autoencoder(tiny, backend="naive").backend == "naive"
    assert set(TABLE.backends) == {"naive"}
    with pytest.raises(UnknownBackendError, match="registered: naive$"):
        quatrain.Autoencoder(tiny, backend="cached-decoder")


def test_none_means_naive(tiny):
    assert quatrain.Autoencoder(tiny, backend=None).backend == "naive"


def test_auto_asks_the_selector_once(tiny):
    asked = []
    _fill(select=lambda config: asked.append(config) or "mine")
    assert quatrain.Autoencoder(tiny, backend="auto").backend == "naive"
    assert asked == [tiny]


def test_a_selector_that_builds_auto_models_is_refused_not_looped(tiny):
    def selector(config):
        quatrain.Autoencoder(config, backend="auto")  # what a selector must never do
        return "mine"

    _fill(select=selector)
    with pytest.raises(BackendUnavailableError, match="'auto' was asked for while 'auto' was being selected"):
        quatrain.Autoencoder(tiny, backend="auto")
    _fill(select=lambda config: "auto")
    with pytest.raises(BackendUnavailableError, match="returned 'auto'"):
        resolve_backend("auto", tiny)


def test_no_provider_is_one_clear_error(tiny, monkeypatch):
    import quatrain._resolve as table_module

    TABLE.clear()
    monkeypatch.setattr(table_module.metadata, "entry_points", lambda group: [])
    with pytest.raises(UnknownBackendError, match=r"no backend provider filled .*'quatrain.providers': none"):
        quatrain.Autoencoder(tiny, backend="naive")


def test_a_lookup_from_inside_a_provider_is_refused(tiny, monkeypatch):
    import quatrain._resolve as table_module

    class Provider:
        name, value, dist = "looping", "tests:provider", None

        def load(self):
            return lambda table: quatrain.Autoencoder(tiny, backend="naive")

    TABLE.clear()
    monkeypatch.setattr(table_module.metadata, "entry_points", lambda group: [Provider()])
    with pytest.raises(PluginError, match="looked up while the backend table was being filled"):
        quatrain.Autoencoder(tiny, backend="naive")
