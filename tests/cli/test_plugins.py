"""``quatrain plugins``: listing with status, broken plugins reported while the rest works, pip driven safely."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from quatrain.cli import _plugins, cli

GOOD = """
    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class Other(NaiveAttention):
        name = "other"

    @hookimpl
    def register_attention_backends(register):
        register(Other)

    @hookimpl
    def register_models(register):
        register("other-poems", description="d", config="tiny", recipe={})
"""
BROKEN = {
    "raises-on-import": ("raise RuntimeError('broken on purpose')\n", "RuntimeError: broken on purpose"),
    "existing-backend-name": (
        """
        from quatrain import hookimpl
        from quatrain.plugins.naive import NaiveAttention

        class Impostor(NaiveAttention):
            pass  # keeps the name 'naive'

        @hookimpl
        def register_attention_backends(register):
            register(Impostor)
        """,
        "backend name 'naive' is registered by both 'naive' and 'bad'",
    ),
    "wrong-hook-signature": (
        """
        from quatrain import hookimpl

        @hookimpl
        def register_models(register, colour):
            pass
        """,
        "colour",
    ),
    "unknown-hook": (
        """
        from quatrain import hookimpl

        @hookimpl
        def register_backends(register):
            pass
        """,
        "implements unknown hook(s) register_backends",
    ),
    "existing-model-name": (
        """
        from quatrain import hookimpl

        @hookimpl
        def register_models(register):
            register("sonnets", description="mine", config="tiny", recipe={})
        """,
        "model card 'sonnets' is registered by both 'models' and 'bad'",
    ),
    "sys-exit-on-import": ("import sys\nsys.exit(3)\n", "called sys.exit(3)"),
    "sys-exit-in-a-hook": (
        """
        import sys
        from quatrain import hookimpl

        @hookimpl
        def register_models(register):
            sys.exit()
        """,
        "called sys.exit(None)",
    ),
}


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_list_shows_builtin_plugins_with_what_they_add():
    rows = {r["name"]: r for r in json.loads(run("plugins", "list", "--json").output)}
    assert rows["naive"]["distribution"] == "quatrain" and rows["naive"]["backends"] == ["naive"]
    assert rows["models"]["models"] == ["seed", "sonnets", "tiny"]
    assert rows["models"]["hooks"] == ["register_models"]
    result = run("plugins", "list")
    assert result.exit_code == 0 and result.output.splitlines()[0].split() == [
        "PLUGIN",
        "DISTRIBUTION",
        "HOOKS",
        "BACKENDS",
        "MODELS",
        "STATUS",
    ]


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_plugin_is_reported_and_everything_else_works(install, kind):
    source, error = BROKEN[kind]
    install("acme-attn", {"bad": source, "other": GOOD})
    result = run("plugins", "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("bad "))
    assert "acme-attn 1.2.3" in line and "broken: " in line and error in line
    good = next(line for line in result.output.splitlines() if line.startswith("other "))
    assert good.split()[-1] == "ok" and "other-poems" in good
    backends = run("backends", "--json")
    assert backends.exit_code == 0
    assert {"naive", "other"} <= {b["name"] for b in json.loads(backends.output)["backends"]}
    assert "sonnets" in run("zoo", "list").output


def test_strict_mode_makes_a_broken_plugin_a_one_line_error(install, monkeypatch):
    install("acme-attn", {"bad": BROKEN["raises-on-import"][0]})
    monkeypatch.setenv("QUATRAIN_STRICT_PLUGINS", "1")
    result = run("backends")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: plugin 'bad' (acme_attn_bad) is broken: RuntimeError: broken on purpose")


def test_disable_plugin_option(install, monkeypatch):
    install("acme-attn", {"bad": BROKEN["raises-on-import"][0], "other": GOOD})
    monkeypatch.setenv("QUATRAIN_DISABLE_PLUGINS", "bad")
    result = run("--disable-plugin", "other", "plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    status = {r["name"]: r["status"] for r in json.loads(result.output)}
    assert status["bad"] == status["other"] == "disabled" and status["naive"] == "ok"
    assert os.environ["QUATRAIN_DISABLE_PLUGINS"] == "bad"  # restored after the command
    status = {r["name"]: r["status"] for r in json.loads(run("plugins", "list", "--json").output)}
    assert status["other"] == "ok"
    result = run("--disable-plugin", "naive", "backends", "--json")
    assert "naive" not in {b["name"] for b in json.loads(result.output)["backends"]}


class FakePip:
    """Stands in for pip and for the fresh-interpreter probe; records what would have run."""

    def __init__(self, monkeypatch, plugins, distributions, returncode=0, stderr=""):
        self.calls: list[tuple[str, ...]] = []
        self.after = {"plugins": plugins, "distributions": distributions}
        self.returncode, self.stderr = returncode, stderr
        monkeypatch.setattr(_plugins, "pip", self.pip)
        monkeypatch.setattr(_plugins, "probe", lambda: self.after)
        monkeypatch.setattr(_plugins, "installed_distributions", lambda: {"quatrain": "0.1.0", "old-plugin": "1.0"})

    def pip(self, *args):
        self.calls.append(args)
        code = self.returncode if args[0] == "install" else 0
        return subprocess.CompletedProcess(args, code, stdout="", stderr=self.stderr)


def _record(name, dist, status="ok", error=None, backends=(), models=()):
    return {
        "name": name,
        "module": name,
        "distribution": dist,
        "version": "2.0",
        "status": status,
        "error": error,
        "hooks": [],
        "backends": list(backends),
        "models": list(models),
    }


def test_install_reports_what_the_new_plugin_adds(monkeypatch, tmp_path):
    fake = FakePip(monkeypatch, [_record("lw", "Acme_LW", backends=["local-window"])], {"acme-lw": "2.0"})
    result = run("plugins", "install", "acme-lw==2.0", "-e", str(tmp_path), "-U")
    assert result.exit_code == 0, result.output
    assert fake.calls == [("install", "--upgrade", "acme-lw==2.0", "-e", str(tmp_path))]
    assert "installed plugin lw (Acme_LW 2.0): loads; backends local-window" in result.output


def test_install_of_a_broken_new_plugin_undoes_it(monkeypatch):
    fake = FakePip(monkeypatch, [_record("lw", "acme-lw", "broken", "ImportError: no torchvision")], {"acme-lw": "2.0"})
    result = run("plugins", "install", "acme-lw")
    assert result.exit_code == 1
    assert fake.calls[-1] == ("uninstall", "-y", "acme-lw")
    assert result.output.strip() == (
        "Error: installed but broken, so uninstalled acme-lw again: plugin 'lw' (acme-lw): ImportError: no torchvision"
    )


def test_install_of_a_broken_upgrade_is_left_in_place_and_said_so(monkeypatch):
    fake = FakePip(monkeypatch, [_record("old", "old-plugin", "broken", "boom")], {"old-plugin": "2.0"})
    result = run("plugins", "install", "-U", "old-plugin")
    assert result.exit_code == 1 and "left installed" in result.output and "boom" in result.output
    assert [c[0] for c in fake.calls] == ["install"]


def test_pip_failure_is_one_line_with_pips_error(monkeypatch):
    stderr = "Collecting nope\nERROR: No matching distribution found for nope\n"
    FakePip(monkeypatch, [], {}, returncode=1, stderr=stderr)
    result = run("plugins", "install", "nope")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: pip install failed (exit 1): ERROR: No matching distribution found for nope"


def test_install_without_a_plugin_warns(monkeypatch):
    FakePip(monkeypatch, [], {"requests": "2.0"})
    result = run("plugins", "install", "requests")
    assert result.exit_code == 0 and "no quatrain plugin came with it" in result.output


def test_install_needs_something():
    assert run("plugins", "install").exit_code == 2


def test_uninstall(install, monkeypatch):
    install("acme-attn", {"other": GOOD})
    fake = FakePip(monkeypatch, [], {})
    result = run("plugins", "uninstall", "other")
    assert result.exit_code == 0, result.output
    assert fake.calls == [("uninstall", "-y", "acme-attn")]
    assert "uninstalled acme-attn (plugins: other)" in result.output
    assert run("plugins", "uninstall", "Acme_Attn").exit_code == 0  # by distribution name, any spelling


def test_uninstall_that_leaves_the_plugin_is_an_error(install, monkeypatch):
    install("acme-attn", {"other": GOOD})
    FakePip(monkeypatch, [_record("other", "acme-attn")], {})
    result = run("plugins", "uninstall", "other")
    assert result.exit_code == 1 and "plugins other remain" in result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("naive", "'naive' is built into quatrain; disable it instead (quatrain --disable-plugin naive"),
        ("nothing", "no installed plugin or plugin distribution 'nothing'; third-party plugins: none"),
    ],
)
def test_uninstall_refusals(monkeypatch, name, message):
    fake = FakePip(monkeypatch, [], {})
    result = run("plugins", "uninstall", name)
    assert result.exit_code == 1 and message in result.output
    assert fake.calls == []


def test_probe_runs_a_fresh_interpreter():
    data = _plugins.probe()
    assert {p["name"] for p in data["plugins"]} >= {"naive", "models"}
    assert "quatrain" in data["distributions"]


def test_check_prints_the_kits_report_and_its_verdict(install, monkeypatch):
    import quatrain.testing
    from quatrain.testing import CheckResult, ConformanceReport

    install("acme-attn", {"other": GOOD})
    asked = []

    def fake_check(backend, **kwargs):
        asked.append((backend, kwargs))
        ok = CheckResult(name="decode.parallel[gru]", device="cpu", dtype="float32", passed=True, detail="fine")
        return ConformanceReport(backend=backend, reference="naive", seed=kwargs["seed"], checks=(ok,))

    monkeypatch.setattr(quatrain.testing, "check_backend", fake_check)
    result = run("plugins", "check", "other", "--dtype", "float32", "--rnn", "gru", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert asked == [("other", {"devices": None, "dtypes": ("float32",), "rnn_kinds": ("gru",), "seed": 3})]
    assert result.output.splitlines()[0] == "other from acme-attn 1.2.3"
    assert "conformance of 'other' against 'naive' (seed 3): PASSED" in result.output
    report = json.loads(run("plugins", "check", "other", "--json").output)
    assert report["passed"] is True and report["exact"] is True and report["distribution"] == "acme-attn"
    assert asked[-1][1]["rnn_kinds"] == ("lstm", "gru", "rnn") and asked[-1][1]["dtypes"] is None


WRONG = """
    import torch
    from quatrain import hookimpl
    from quatrain.plugins.naive import NaiveAttention

    class Wrong(NaiveAttention):
        name = "wrong"

        def step(self, query, state, need_weights=False):
            context, weights = super().step(query, state, need_weights)
            return context * 1.01, weights

    @hookimpl
    def register_attention_backends(register):
        register(Wrong)
"""


@pytest.mark.slow
def test_check_fails_a_backend_that_differs_from_naive(install):
    """The real kit, on one small cell of its matrix."""
    install("acme-attn", {"wrong": WRONG})
    result = run("plugins", "check", "wrong", "--dtype", "float32", "--rnn", "rnn")
    assert result.exit_code == 1
    assert "FAILED" in result.output and "FAIL  module.step " in result.output


def test_check_an_unknown_backend_is_one_line():
    result = run("plugins", "check", "nope")
    assert result.exit_code == 1 and result.output.startswith("Error: unknown backend 'nope'; registered: ")


def test_install_of_a_plugin_that_calls_sys_exit_on_import_undoes_it(install, monkeypatch, tmp_path):
    """The fresh-interpreter probe is real: the new plugin's sys.exit() is isolated, seen as broken, rolled back."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(_plugins, "installed_distributions", lambda: {"quatrain": "0.1.0"})
    calls = []

    def pip(*args):
        calls.append(args)
        if args[0] == "install":
            install("acme-exit", {"quitter": "import sys\nsys.exit(3)\n"})
        return subprocess.CompletedProcess(args, 0, stdout="", stderr="")

    monkeypatch.setattr(_plugins, "pip", pip)
    result = run("plugins", "install", "acme-exit")
    assert result.exit_code == 1, result.output
    assert calls[-1] == ("uninstall", "-y", "acme-exit")
    assert "installed but broken, so uninstalled acme-exit again: plugin 'quitter' (acme-exit): called sys.exit(3)" in (
        result.output
    )


def test_install_that_stops_quatrain_starting_is_undone(monkeypatch):
    monkeypatch.setattr(
        _plugins, "installed_distributions", iter([{"quatrain": "0.1.0"}, {"quatrain": "0.1.0", "evil": "1"}]).__next__
    )
    calls = []
    monkeypatch.setattr(_plugins, "pip", lambda *a: calls.append(a) or subprocess.CompletedProcess(a, 0, "", ""))

    def probe():
        raise _plugins.click.ClickException("quatrain no longer imports after pip: no output")

    monkeypatch.setattr(_plugins, "probe", probe)
    result = run("plugins", "install", "evil")
    assert result.exit_code == 1
    assert calls[-1] == ("uninstall", "-y", "evil")
    assert "quatrain no longer imports after pip: no output; uninstalled evil again" in result.output


def test_a_plugin_that_calls_sys_exit_can_still_be_uninstalled(install, monkeypatch):
    """Issue 12 finding 2: such a plugin took even ``plugins uninstall`` down (exit 3, no output)."""
    install("acme-exit", {"quitter": "import sys\nsys.exit(3)\n"})
    fake = FakePip(monkeypatch, [], {})
    result = run("plugins", "uninstall", "quitter")
    assert result.exit_code == 0, result.output
    assert fake.calls == [("uninstall", "-y", "acme-exit")]
