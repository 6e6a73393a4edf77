"""``quatrain plugins list|install|uninstall|check``: what is installed, adding and removing plugins with pip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from ._common import emit_json, json_option, table, warn

# Run in a fresh interpreter after pip, so new entry points and modules are seen as a new process sees them.
PROBE = """
import json
import os
from importlib import metadata
from quatrain.registry import load_registry
registry = load_registry()
print(json.dumps({
    "plugins": [p.to_dict() for p in registry.plugins.values()],
    "distributions": {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]},
}))
"""


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Canonical distribution name -> version, as this process sees them."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pip in quatrain's own interpreter, capturing its output."""
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def probe() -> dict[str, Any]:
    """Plugins and distributions as a fresh interpreter sees them."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"quatrain no longer imports after pip: {tail}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    data["distributions"] = {canonical(k): v for k, v in data["distributions"].items()}
    return data


def _pip_failed(action: str, done: subprocess.CompletedProcess[str]) -> click.ClickException:
    lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["no output"]
    return click.ClickException(f"pip {action} failed (exit {done.returncode}): {errors[-1].strip()}")


def plugin_rows() -> list[dict[str, Any]]:
    from quatrain.registry import get_registry

    return [p.to_dict() for p in get_registry().plugins.values()]


def status_text(row: dict[str, Any]) -> str:
    return f"broken: {row['error']}" if row["status"] == "broken" else str(row["status"])


@click.group()
def plugins() -> None:
    """Installed plugins: list them, install or uninstall them with pip, check a backend's conformance."""


@plugins.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """Every plugin: distribution, version, hooks, backends and models it adds, and its status."""
    rows = plugin_rows()
    if as_json:
        emit_json(rows)
        return
    body = [
        [
            r["name"],
            f"{r['distribution'] or '-'} {r['version'] or ''}".strip(),
            ",".join(h.removeprefix("register_") for h in r["hooks"]) or "-",
            ",".join(r["backends"]) or "-",
            ",".join(r["models"]) or "-",
            status_text(r),
        ]
        for r in rows
    ]
    click.echo(table(body, ["PLUGIN", "DISTRIBUTION", "HOOKS", "BACKENDS", "MODELS", "STATUS"]))


@plugins.command()
@click.argument("specs", nargs=-1)
@click.option(
    "-e",
    "--editable",
    "editables",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Install this local project folder in editable mode (repeatable).",
)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade the given packages to the newest allowed versions.")
@json_option
def install(specs: tuple[str, ...], editables: tuple[Path, ...], upgrade: bool, as_json: bool) -> None:
    """Install plugin packages with pip into quatrain's own environment, then check that they load.

    SPECS are anything pip accepts (names, versions, folders, wheels). A newly installed plugin that
    does not load is uninstalled again, and the command fails with its error.
    """
    if not specs and not editables:
        raise click.UsageError("give at least one package spec or -e PATH")
    before = installed_distributions()
    args = ["install", *(["--upgrade"] if upgrade else []), *specs]
    for folder in editables:
        args += ["-e", str(folder)]
    done = pip(*args)
    if done.returncode != 0:
        raise _pip_failed("install", done)
    try:
        after = probe()
    except click.ClickException as e:  # quatrain itself no longer starts: undo what pip added
        new = sorted(set(installed_distributions()) - set(before))
        undone = pip("uninstall", "-y", *new) if new else None
        if undone is not None and undone.returncode == 0:
            raise click.ClickException(f"{e.message}; uninstalled {', '.join(new)} again") from None
        raise
    changed = {name for name, version in after["distributions"].items() if before.get(name) != version}
    mine = [p for p in after["plugins"] if p["distribution"] and canonical(p["distribution"]) in changed]
    if not mine:
        warn(f"installed {', '.join(sorted(changed)) or 'nothing new'}; no quatrain plugin came with it")
        if as_json:
            emit_json({"installed": sorted(changed), "plugins": []})
        return
    broken = [p for p in mine if p["status"] == "broken"]
    if broken:
        new = sorted({canonical(p["distribution"]) for p in broken} - set(before))
        undone = pip("uninstall", "-y", *new) if new else None
        what = "; ".join(f"plugin {p['name']!r} ({p['distribution']}): {p['error']}" for p in broken)
        if undone is not None and undone.returncode == 0:
            raise click.ClickException(f"installed but broken, so uninstalled {', '.join(new)} again: {what}")
        raise click.ClickException(f"installed but broken (left installed: pip could not undo it): {what}")
    if as_json:
        keys = ("name", "distribution", "version", "status", "backends", "models")
        emit_json({"installed": sorted(changed), "plugins": [{k: p[k] for k in keys} for p in mine]})
        return
    for p in mine:
        added = [f"{kind} {', '.join(p[kind])}" for kind in ("backends", "models") if p[kind]]
        detail = "; ".join(added) or "no backends or models"
        status = "disabled" if p["status"] == "disabled" else "loads"
        click.echo(f"installed plugin {p['name']} ({p['distribution']} {p['version']}): {status}; {detail}")


@plugins.command()
@click.argument("name")
def uninstall(name: str) -> None:
    """Uninstall the distribution behind plugin NAME (or the distribution NAME itself) with pip."""
    from quatrain.registry import OWN_DISTRIBUTION

    rows = plugin_rows()
    dists = {canonical(r["distribution"]) for r in rows if r["name"] == name and r["distribution"]}
    dists |= {
        canonical(r["distribution"])
        for r in rows
        if r["distribution"] and canonical(r["distribution"]) == canonical(name)
    }
    if not dists:
        known = sorted(
            {r["name"] for r in rows if r["distribution"] and canonical(r["distribution"]) != OWN_DISTRIBUTION}
        )
        raise click.ClickException(
            f"no installed plugin or plugin distribution {name!r}; third-party plugins: {', '.join(known) or 'none'}"
        )
    if OWN_DISTRIBUTION in dists:
        raise click.ClickException(
            f"{name!r} is built into quatrain; disable it instead (quatrain --disable-plugin {name} ...)"
        )
    done = pip("uninstall", "-y", *sorted(dists))
    if done.returncode != 0:
        raise _pip_failed("uninstall", done)
    after = probe()
    left = [p["name"] for p in after["plugins"] if p["distribution"] and canonical(p["distribution"]) in dists]
    if left:
        raise click.ClickException(f"pip uninstalled {', '.join(sorted(dists))} but plugins {', '.join(left)} remain")
    gone = [r for r in rows if r["distribution"] and canonical(r["distribution"]) in dists]
    click.echo(f"uninstalled {', '.join(sorted(dists))} (plugins: {', '.join(r['name'] for r in gone)})")


def disable_plugins(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Add ``names`` to ``QUATRAIN_DISABLE_PLUGINS`` for this command (and the pip checks it runs).

    The variable is restored when the command's context closes, and a registry already loaded in this
    process is dropped so the next lookup rediscovers without those plugins.
    """
    if not names:
        return
    variable = "QUATRAIN_DISABLE_PLUGINS"
    previous = os.environ.get(variable)
    merged = {*names, *(n.strip() for n in (previous or "").split(","))} - {""}
    os.environ[variable] = ",".join(sorted(merged))
    _forget_registry()

    def restore() -> None:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
        _forget_registry()

    ctx.call_on_close(restore)


def _forget_registry() -> None:
    registry = sys.modules.get("quatrain.registry")  # not imported yet: nothing to forget (and no torch import)
    if registry is not None:
        registry.set_registry(None)


@plugins.command()
@click.argument("backend")
@click.option(
    "--device", "devices", multiple=True, help="Test on this device (repeatable; default: declared and here)."
)
@click.option("--dtype", "dtypes", multiple=True, help="Test in this dtype (repeatable; default: the declared ones).")
@click.option(
    "--rnn",
    "rnn_kinds",
    multiple=True,
    type=click.Choice(["lstm", "gru", "rnn"]),
    help="Decoder RNN kinds for the whole-model checks (repeatable; default: all).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, inputs and coins.")
@json_option
def check(
    backend: str,
    devices: tuple[str, ...],
    dtypes: tuple[str, ...],
    rnn_kinds: tuple[str, ...],
    seed: int,
    as_json: bool,
) -> None:
    """Run the conformance kit (quatrain.testing) on one backend against 'naive' and print its report.

    Exits 1 when a check fails. An approximate backend (capabilities exact=false) is expected to
    differ from the reference; the report then says by how much.
    """
    from quatrain.registry import get_registry
    from quatrain.testing import check_backend

    entry = get_registry().backend(backend)
    report = check_backend(
        backend,
        devices=devices or None,
        dtypes=dtypes or None,
        rnn_kinds=rnn_kinds or ("lstm", "gru", "rnn"),
        seed=seed,
    )
    exact = entry.cls.capabilities.exact
    if as_json:
        emit_json({**report.to_dict(), "exact": exact, "distribution": entry.distribution})
    else:
        click.echo(f"{backend} from {entry.distribution or entry.plugin} {entry.version or ''}".rstrip())
        if not exact:
            click.echo(f"{backend} declares exact=false: it approximates the reference, so differences are expected")
        click.echo(report.format())
    if not report.passed:
        raise click.exceptions.Exit(1)
