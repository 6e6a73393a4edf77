"""Plugin discovery through real entry points (fake distributions on sys.path), with failure isolation."""

from __future__ import annotations

import json

import pytest

import quatrain
from quatrain import PluginError, UnknownBackendError
from quatrain.registry import load_registry, set_registry

GOOD = """
    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class Other(NaiveAttention):
        name = "other"

    @hookimpl
    def register_attention_backends(register):
        register(Other)
"""
RAISES_ON_IMPORT = "raise RuntimeError('this plugin is broken on purpose')\n"
DUPLICATE = """
    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class Impostor(NaiveAttention):
        pass  # keeps the name 'naive'

    @hookimpl
    def register_attention_backends(register):
        register(Impostor)
"""
WRONG_SIGNATURE = """
    from quatrain import hookimpl

    @hookimpl
    def register_attention_backends(register, something_else):
        pass
"""
NOT_A_BACKEND = """
    from quatrain import hookimpl

    @hookimpl
    def register_attention_backends(register):
        register(dict)
"""


def test_builtin_naive_comes_from_the_projects_own_entry_point():
    registry = load_registry()
    entry = registry.backend("naive")
    assert entry.distribution == "quatrain" and entry.plugin == "naive"
    assert registry.plugins["naive"].status == "ok"
    assert registry.plugins["naive"].hooks == ("register_attention_backends",)


def test_third_party_backend_is_found_with_its_distribution(install):
    install("acme-attn", {"other": GOOD})
    registry = load_registry()
    entry = registry.backend("other")
    assert (entry.distribution, entry.version) == ("acme-attn", "1.2.3")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (RAISES_ON_IMPORT, "RuntimeError: this plugin is broken on purpose"),
        (DUPLICATE, "backend name 'naive' is registered by both 'naive' and 'bad'"),
        (WRONG_SIGNATURE, "something_else"),
        (NOT_A_BACKEND, "not an AttentionBackend subclass"),
    ],
    ids=["raises-on-import", "duplicate-name", "wrong-hook-signature", "not-a-backend"],
)
def test_a_broken_plugin_is_listed_and_everything_else_works(install, tiny, make_batch, source, error):
    install("acme-attn", {"bad": source, "other": GOOD})
    registry = load_registry()
    record = registry.plugins["bad"]
    assert record.status == "broken" and record.distribution == "acme-attn"
    assert error in record.error
    assert set(registry.backends) >= {"naive", "other"}
    assert registry.backend("naive").plugin == "naive"
    set_registry(registry)
    x, mask = make_batch(tiny, [3])
    quatrain.Autoencoder(tiny, backend="naive")(x, mask)
    with pytest.raises(UnknownBackendError, match=r"broken plugins: bad"):
        registry.backend("missing")


def test_strict_mode_turns_a_broken_plugin_into_an_error(install, monkeypatch):
    install("acme-attn", {"bad": RAISES_ON_IMPORT})
    monkeypatch.setenv("QUATRAIN_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'bad' .* is broken: RuntimeError"):
        load_registry()


def test_disabled_plugin_is_not_loaded(install, monkeypatch):
    install("acme-attn", {"bad": RAISES_ON_IMPORT, "other": GOOD})
    monkeypatch.setenv("QUATRAIN_DISABLE_PLUGINS", "bad, other")
    registry = load_registry()
    assert registry.plugins["bad"].status == "disabled"  # never imported, so not broken
    assert "other" not in registry.backends
    with pytest.raises(UnknownBackendError, match="'other' is disabled"):
        registry.backend("other")


def test_allow_list(install, monkeypatch):
    install("acme-attn", {"other": GOOD})
    monkeypatch.setenv("QUATRAIN_LOAD_PLUGINS", "other")
    registry = load_registry()
    assert set(registry.backends) == {"other"}
    monkeypatch.setenv("QUATRAIN_LOAD_PLUGINS", "")
    assert load_registry().backends == {}


def test_plugins_registered_directly(tiny):
    import quatrain.plugins.naive as naive

    registry = load_registry(entry_points=False, plugins=[("mine", naive)])
    assert registry.backend("naive").plugin == "mine"


DECLARED = """
    from quatrain import Capabilities

    CAPS = Capabilities(layout="split-qkvo", devices=("cuda",), exact=False, notes=("needs a CUDA extension",))
"""


def test_a_broken_plugins_declared_capabilities_are_still_listed(install):
    """A distribution may declare its backends' capabilities statically; they show while the plugin is broken."""
    from click.testing import CliRunner

    from quatrain.cli import cli

    install("acme-attn", {"bad": RAISES_ON_IMPORT}, capabilities={"fancy": DECLARED})
    registry = load_registry()
    declared = registry.declared["fancy"]
    assert (declared.plugin, declared.distribution) == ("bad", "acme-attn")
    assert declared.capabilities.devices == ("cuda",) and "broken on purpose" in declared.error
    assert "fancy" not in registry.backends  # listed, never runnable
    result = CliRunner().invoke(cli, ["backends", "--json"])
    row = next(b for b in json.loads(result.output)["backends"] if b["name"] == "fancy")
    assert row["available"] is False and row["reasons"][0]["code"] == "plugin"
    assert row["capabilities"]["notes"] == ["needs a CUDA extension"]


def test_declarations_of_a_working_plugin_are_ignored(install):
    install("acme-attn", {"other": GOOD}, capabilities={"fancy": DECLARED})
    assert load_registry().declared == {}
