"""``quatrain backends`` and ``quatrain doctor``: what is installed, what runs here, and why not."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import click

from ._common import emit_json, json_option, table

DTYPES = ("float32", "bfloat16", "float16")


def backend_rows(device: str | None, dtype: str) -> tuple[list[dict[str, Any]], Any]:
    """One dict per registered backend: source, availability with reasons, capabilities."""
    import torch

    from quatrain.registry import detect_hardware, get_registry

    hardware = detect_hardware()
    device = device or hardware.device
    registry = get_registry()
    rows = []
    for name in sorted(registry.backends):
        entry = registry.backends[name]
        reasons = entry.cls.unsupported_reasons(hardware, device, getattr(torch, dtype))
        rows.append(
            {
                "name": name,
                "plugin": entry.plugin,
                "distribution": entry.distribution,
                "version": entry.version,
                "device": device,
                "dtype": dtype,
                "available": not reasons,
                "reasons": [{"code": r.code, "message": r.message, "hint": r.hint} for r in reasons],
                "capabilities": entry.cls.capabilities.to_dict(),
            }
        )
    for name in sorted(set(registry.declared) - set(registry.backends)):
        declared = registry.declared[name]
        rows.append({
            "name": name,
            "plugin": declared.plugin,
            "distribution": declared.distribution,
            "version": declared.version,
            "device": device,
            "dtype": dtype,
            "available": False,
            "reasons": [{"code": "plugin", "message": f"its plugin {declared.plugin!r} is broken: {declared.error}",
                         "hint": "see 'quatrain doctor'; its capabilities are its package's static declaration"}],
            "capabilities": declared.capabilities.to_dict(),
        })  # fmt: skip
    return rows, registry


@click.command()
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "mps"]),
    default=None,
    help="Judge availability for this device (default: the best one detected).",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="float32",
    show_default=True,
    help="Judge availability for this dtype.",
)
@json_option
def backends(device: str | None, dtype: str, as_json: bool) -> None:
    """List attention backends, where they come from, and whether they run here."""
    rows, registry = backend_rows(device, dtype)
    broken = [p.to_dict() for p in registry.plugins.values() if p.status != "ok"]
    if as_json:
        emit_json({"backends": rows, "plugins_not_loaded": broken})
        return
    body = []
    for r in rows:
        caps = r["capabilities"]
        flags = [k for k in ("training", "parallel_decode", "returns_weights", "deterministic", "exact") if caps[k]]
        source = f"{r['distribution'] or r['plugin']} {r['version'] or ''}".strip()
        body.append([r["name"], "yes" if r["available"] else "no", caps["layout"], source, ",".join(flags)])
    click.echo(
        table(
            body, ["BACKEND", f"RUNS ({rows[0]['device'] if rows else '-'}, {dtype})", "LAYOUT", "FROM", "CAPABILITIES"]
        )
    )
    for r in rows:
        for reason in r["reasons"]:
            click.echo(f"  {r['name']}: {reason['message']}" + (f" ({reason['hint']})" if reason["hint"] else ""))
    for p in broken:
        click.echo(f"  plugin {p['name']} ({p['module']}): {p['status']}" + (f": {p['error']}" if p["error"] else ""))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """Report hardware, versions and every plugin's status."""
    import attrs

    from quatrain.registry import detect_hardware, get_registry

    hardware = detect_hardware()
    registry = get_registry()
    report: dict[str, Any] = {
        "hardware": attrs.asdict(hardware),
        "fingerprint": hardware.fingerprint(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("quatrain", "torch", "numpy", "pluggy", "attrs", "click", "safetensors", "platformdirs")
        },
        "plugins": [p.to_dict() for p in registry.plugins.values()],
    }
    rows, _ = backend_rows(None, "float32")
    report["backends"] = {r["name"]: {"available": r["available"], "reasons": r["reasons"]} for r in rows}
    if as_json:
        emit_json(report)
        return
    h = report["hardware"]
    click.echo(f"device      {h['device']} ({h['device_name']})")
    click.echo(
        f"cuda        {h['cuda_available']}" + (f", capability {h['cuda_capability']}" if h["cuda_capability"] else "")
    )
    click.echo(f"mps         {h['mps_available']}")
    click.echo(f"threads     {h['threads']}")
    click.echo(f"compiler    {h['compiler'] or 'none (torch.compile cannot build CPU kernels)'}")
    click.echo(f"python      {report['python']}")
    for name, version in report["versions"].items():
        click.echo(f"{name:<11} {version or 'not installed'}")
    click.echo("plugins:")
    for p in report["plugins"]:
        detail = f": {p['error']}" if p["error"] else (f" -> {', '.join(p['backends'])}" if p["backends"] else "")
        click.echo(f"  {p['name']:<16} {p['status']}{detail}")
    click.echo("backends on this machine (float32):")
    for name, b in report["backends"].items():
        why = "; ".join(r["message"] for r in b["reasons"])
        click.echo(f"  {name:<16} {'available' if b['available'] else 'unavailable: ' + why}")
