"""`quatrain backends` lists every built-in with its layout; the README's backends table matches the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from quatrain.cli._main import cli
from quatrain.registry import OWN_DISTRIBUTION, load_registry

BUILTINS = {
    name: entry.cls.capabilities
    for name, entry in load_registry(disabled=()).backends.items()
    if entry.distribution == OWN_DISTRIBUTION
}
README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_builtin_listed_and_the_device_specific_ones_unavailable_on_cpu(registry):
    result = CliRunner().invoke(cli, ["backends", "--device", "cpu", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["backends"] if r["name"] in BUILTINS}
    assert set(rows) == set(BUILTINS)
    assert {"naive", "cached-decoder", "deferred-kv", "triton-step", "mps"} <= set(rows)
    unavailable = {n for n, r in rows.items() if not r["available"]}
    assert unavailable == {n for n, caps in BUILTINS.items() if "cpu" not in caps.devices}
    assert {"mps", "triton-step"} <= unavailable
    assert all(rows[n]["reasons"][0]["code"] == "device" for n in unavailable)
    assert rows["compiled"]["capabilities"]["warmup_seconds"] > 0
    assert {n: r["capabilities"]["layout"] for n, r in rows.items()} == {n: c.layout for n, c in BUILTINS.items()}


def test_the_readme_backends_table_names_every_builtin_with_its_layout():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| `([a-z0-9-]+)` \|", README.read_text(), flags=re.MULTILINE)
    assert dict(rows) == {name: caps.layout for name, caps in BUILTINS.items()}
