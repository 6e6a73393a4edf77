"""Issue 12, finding 23: ``plugins install`` has ``--json`` (stdout holds only the JSON)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from quatrain.cli import cli

from .test_plugins import FakePip, _record


def test_install_json_reports_what_the_new_plugin_adds(monkeypatch):
    FakePip(monkeypatch, [_record("lw", "acme-lw", backends=["local-window"])], {"acme-lw": "2.0"})
    result = CliRunner().invoke(cli, ["plugins", "install", "acme-lw", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["installed"] == ["acme-lw"]
    assert report["plugins"] == [
        {
            "name": "lw",
            "distribution": "acme-lw",
            "version": "2.0",
            "status": "ok",
            "backends": ["local-window"],
            "models": [],
        }
    ]


def test_install_json_without_a_plugin_is_still_json(monkeypatch):
    FakePip(monkeypatch, [], {"requests": "2.0"})
    result = CliRunner().invoke(cli, ["plugins", "install", "requests", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"installed": ["requests"], "plugins": []}
    assert "no quatrain plugin came with it" in result.stderr
