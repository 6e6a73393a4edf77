"""The example third-party plugin (examples/quatrain-local-window): its backend, and installed in a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import quatrain
from quatrain.registry import load_registry, set_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quatrain-local-window"


@pytest.fixture(name="lw")
def _lw(monkeypatch):
    """The example's module imported from its source folder, registered next to the installed plugins."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    import quatrain_local_window

    registry = load_registry(plugins=[("local-window", quatrain_local_window)])
    set_registry(registry)
    return quatrain_local_window


def _pair(lw, radius):
    from quatrain.plugins.naive import NaiveAttention

    cls = type("Wide", (lw.LocalWindowAttention,), {"radius": radius})
    naive, local = NaiveAttention(32, 4), cls(32, 4)
    local.load_state_dict(naive.state_dict())  # same layout, same parameter names
    return naive, local


def test_a_window_wider_than_the_memory_is_the_reference_attention(lw):
    naive, local = _pair(lw, radius=50)
    memory, queries = torch.randn(3, 9, 32), torch.randn(3, 9, 32)
    key_mask = torch.arange(9)[None] < torch.tensor([9, 4, 0])[:, None]  # the last row has no key at all
    expected, expected_w = naive.parallel(queries, naive.prepare(memory, key_mask), need_weights=True)
    got, got_w = local.parallel(queries, local.prepare(memory, key_mask), need_weights=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_w, expected_w, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[2], torch.zeros_like(got[2]))


def test_steps_attend_only_inside_their_window_and_match_the_parallel_path(lw):
    _, local = _pair(lw, radius=1)
    memory, queries = torch.randn(2, 7, 32), torch.randn(2, 9, 32)  # decoding past the memory's end
    key_mask = torch.ones(2, 7, dtype=torch.bool)
    context, weights = local.parallel(queries, local.prepare(memory, key_mask), need_weights=True)
    state = local.prepare(memory, key_mask)
    stepped = [local.step(queries[:, t], state, need_weights=True) for t in range(9)]
    torch.testing.assert_close(torch.stack([c for c, _ in stepped], 1), context)
    torch.testing.assert_close(torch.stack([w for _, w in stepped], 2), weights)
    outside = ~lw.band_mask(torch.arange(9), 7, 1)  # (T, S)
    assert weights[:, :, outside].abs().max() == 0
    assert (weights[:, :, ~outside] > 0).all()
    assert outside[8].tolist() == [True] * 5 + [False] * 2  # past the end: the last positions


def test_it_runs_in_the_model_and_loads_a_naive_checkpoint(lw, tiny, tmp_path):
    declared = lw.LocalWindowAttention.capabilities
    assert declared.exact is False and declared.layout == "split-qkvo"
    model = quatrain.Autoencoder(tiny, backend="naive").eval()
    path = quatrain.save(model, tmp_path / "m.safetensors")
    local = quatrain.load(path, backend="local-window").eval()
    assert local.backend == "local-window"
    x, mask = torch.randn(2, 4, tiny.embed_dim), torch.ones(2, 4, dtype=torch.bool)
    # Four tokens lie inside a window of ±4: here the approximation is exact, step by step and in parallel.
    for tf in (0.0, 1.0):
        torch.testing.assert_close(local(x, mask, tf).reconstruction, model(x, mask, tf).reconstruction)


# ---------------------------------------------------------------------------------------------------------------
# The real thing: quatrain and the example installed with pip into a new virtual environment.


def _copy_project(target: Path) -> Path:
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "out", "*.egg-info", "__pycache__", ".*_cache")
    for name in ("core", "plugins", "registry", "cli", "examples"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, target / name)
    return target


BROKEN_PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "quatrain-broken"
        version = "0.0.1"

        [project.entry-points.quatrain]
        broken = "quatrain_broken"
    """,
    "quatrain_broken.py": "raise ImportError('needs a package that is not there')\n",
}


@pytest.mark.slow
def test_installed_into_a_fresh_venv(tmp_path):
    project = _copy_project(tmp_path / "project")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {**os.environ, "QUATRAIN_HOME": str(tmp_path / "home")}
    for variable in ("QUATRAIN_DISABLE_PLUGINS", "QUATRAIN_LOAD_PLUGINS", "QUATRAIN_STRICT_PLUGINS", "VIRTUAL_ENV"):
        env.pop(variable, None)

    def sh(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        if ok:
            assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
        return done

    sh(str(bin_ / "pip"), "install", "-q", "-c", str(project / "constraints.txt"), str(project))
    quatrain_cmd = str(bin_ / "quatrain")

    installed = sh(quatrain_cmd, "plugins", "install", str(project / "examples" / "quatrain-local-window"))
    assert (
        "installed plugin local-window (quatrain-local-window 0.1.0): loads; backends local-window" in installed.stdout
    )

    backends = {b["name"]: b for b in json.loads(sh(quatrain_cmd, "backends", "--json").stdout)["backends"]}
    assert backends["local-window"]["distribution"] == "quatrain-local-window"
    assert backends["local-window"]["capabilities"]["exact"] is False
    assert "local-window" in sh(quatrain_cmd, "backends").stdout

    checked = sh(quatrain_cmd, "plugins", "check", "local-window", "--dtype", "float32", "--rnn", "lstm", ok=False)
    assert "Traceback" not in checked.stderr
    assert "local-window declares exact=false" in checked.stdout
    assert "conformance of 'local-window' against 'naive' (seed 0)" in checked.stdout

    env["QUATRAIN_CACHE"] = str(tmp_path / "cache")
    job = ("--preset", "tiny", "--steps", "10", "--device", "cpu", "--json")
    considered = {
        c["name"]: c for c in json.loads(sh(quatrain_cmd, "select", "--allow-approx", *job).stdout)["candidates"]
    }
    assert considered["local-window"]["status"] != "unavailable", considered["local-window"]
    exact_only = {c["name"]: c for c in json.loads(sh(quatrain_cmd, "select", *job).stdout)["candidates"]}
    assert exact_only["local-window"]["status"] == "unavailable"
    assert "approximates" in " ".join(exact_only["local-window"]["reasons"])

    broken = tmp_path / "broken"
    broken.mkdir()
    for name, text in BROKEN_PLUGIN.items():
        (broken / name).write_text(textwrap.dedent(text))
    refused = sh(quatrain_cmd, "plugins", "install", str(broken), ok=False)
    assert refused.returncode == 1
    assert "uninstalled quatrain-broken again: plugin 'broken'" in refused.stderr
    assert "ImportError: needs a package that is not there" in refused.stderr
    assert sh(str(bin_ / "pip"), "show", "quatrain-broken", ok=False).returncode != 0

    removed = sh(quatrain_cmd, "plugins", "uninstall", "local-window")
    assert "uninstalled quatrain-local-window (plugins: local-window)" in removed.stdout
    assert "local-window" not in sh(quatrain_cmd, "backends").stdout
