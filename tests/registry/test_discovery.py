"""Plugin discovery through real entry points (fake distributions on sys.path), with failure isolation."""

from __future__ import annotations

import json
import warnings

import pytest

import quatrain
from quatrain import PluginError, PluginWarning, UnknownBackendError
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
    with pytest.warns(PluginWarning, match="QUATRAIN_LOAD_PLUGINS is set but empty, so no plugin loads"):
        assert load_registry().backends == {}


@pytest.mark.parametrize("variable", ["QUATRAIN_LOAD_PLUGINS", "QUATRAIN_DISABLE_PLUGINS"])
def test_an_unknown_name_in_the_load_or_disable_list_warns(install, monkeypatch, variable):
    install("acme-attn", {"other": GOOD})
    monkeypatch.setenv(variable, "other, nonesuch")
    with pytest.warns(PluginWarning, match=rf"{variable} names no plugin called 'nonesuch'; plugins: .*other"):
        registry = load_registry()
    assert ("other" in registry.backends) == (variable == "QUATRAIN_LOAD_PLUGINS")


def test_known_names_in_the_lists_do_not_warn(install, monkeypatch):
    install("acme-attn", {"other": GOOD})
    monkeypatch.setenv("QUATRAIN_LOAD_PLUGINS", "other,naive")
    monkeypatch.setenv("QUATRAIN_DISABLE_PLUGINS", "naive")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(load_registry().backends) == {"other"}


EXITS_ON_IMPORT = "import sys\nsys.exit(3)\n"
EXITS_IN_HOOK = """
    import sys
    from quatrain import hookimpl

    @hookimpl
    def register_attention_backends(register):
        sys.exit("no GPU, giving up")
"""
RAISES_A_BASE_EXCEPTION = """
    from quatrain import hookimpl

    class Escape(BaseException):
        pass

    @hookimpl
    def register_models(register):
        raise Escape("out of here")
"""


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (EXITS_ON_IMPORT, "called sys.exit(3)"),
        (EXITS_IN_HOOK, "called sys.exit('no GPU, giving up')"),
        (RAISES_A_BASE_EXCEPTION, "Escape: out of here"),
    ],
    ids=["sys-exit-on-import", "sys-exit-in-a-hook", "base-exception-in-a-hook"],
)
def test_a_plugin_that_exits_is_isolated_like_any_broken_plugin(install, source, error):
    install("acme-exit", {"bad": source, "other": GOOD})
    registry = load_registry()
    assert registry.plugins["bad"].status == "broken"
    assert registry.plugins["bad"].error == error
    assert set(registry.backends) >= {"naive", "other"}


def test_a_real_ctrl_c_still_stops_discovery(install):
    install("acme-exit", {"bad": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        load_registry()


def test_trace_plugins_prints_every_hook_call_of_quatrain_backends(install, monkeypatch):
    from click.testing import CliRunner

    from quatrain.cli import cli

    install("acme-attn", {"other": GOOD})
    monkeypatch.setenv("QUATRAIN_TRACE_PLUGINS", "1")
    result = CliRunner().invoke(cli, ["backends"])
    assert result.exit_code == 0, result.output
    calls = [line for line in result.stderr.splitlines() if line.startswith("quatrain: calling ")]
    assert "quatrain: calling register_attention_backends on ['naive']" in calls
    assert "quatrain: calling register_attention_backends on ['other']" in calls
    assert "quatrain: calling register_layout_converters on ['layouts']" in calls
    assert "quatrain: calling register_models on ['models']" in calls
    assert "register_attention_backends" not in result.stdout


def test_without_trace_plugins_nothing_is_traced(monkeypatch, capsys):
    monkeypatch.delenv("QUATRAIN_TRACE_PLUGINS", raising=False)
    load_registry()
    assert "quatrain: calling" not in capsys.readouterr().err


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


def test_the_hooks_discovery_calls_are_exactly_the_hook_specs():
    from quatrain import hookspecs
    from quatrain.registry._discovery import HOOKS

    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "quatrain_spec")}
    assert set(HOOKS) == specs


def test_a_plugin_registered_directly_may_be_any_object_with_hooks(tiny):
    from types import SimpleNamespace

    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class Mine(NaiveAttention):
        name = "mine"

    plugin = SimpleNamespace(register_attention_backends=hookimpl(lambda register: register(Mine)))  # unhashable
    registry = load_registry(entry_points=False, plugins=[("ns", plugin), ("naive", quatrain.plugins.naive)])
    assert set(registry.backends) == {"mine", "naive"} and registry.plugins["ns"].status == "ok"
