"""`quatrain backends` lists all six built-ins; on this CPU machine five run and mps does not."""

from __future__ import annotations

import json

from click.testing import CliRunner

from quatrain.cli._main import cli

BUILTINS = {"naive", "fused-qkv", "sdpa-flash", "cached-decoder", "compiled", "mps"}


def test_all_six_listed_and_mps_unavailable_on_cpu(registry):
    result = CliRunner().invoke(cli, ["backends", "--device", "cpu", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["backends"] if r["name"] in BUILTINS}
    assert set(rows) == BUILTINS
    assert {n for n, r in rows.items() if r["available"]} == BUILTINS - {"mps"}
    assert rows["mps"]["reasons"][0]["code"] == "device"
    assert rows["compiled"]["capabilities"]["warmup_seconds"] > 0
    layouts = {n: r["capabilities"]["layout"] for n, r in rows.items()}
    assert layouts == {
        "naive": "split-qkvo",
        "fused-qkv": "fused-qkv-o",
        "sdpa-flash": "fused-qkv-o",
        "cached-decoder": "q-kv-o",
        "compiled": "q-kv-o",
        "mps": "q-kv-o",
    }
