"""Shared fixtures: a registry with only the plugins a test asks for, tiny configs, seeded RNG."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import quatrain
from quatrain import _deferred, _model
from quatrain.registry import load_registry, set_registry


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Selection decisions and measured warm-ups go to a folder of this test run, never the user's cache: a
    decision cached by an earlier run on this machine must not change what ``auto`` picks in a test. One folder
    for the session, so tests still share the decisions they measure (a test may set its own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUATRAIN_CACHE", str(tmp_path_factory.mktemp("quatrain-cache")))
        yield


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Every test starts from the installed entry points, rediscovered; nothing leaks between tests."""
    set_registry(None)
    yield
    set_registry(None)


@pytest.fixture(name="one_thread")
def _one_thread():
    """Torch on one thread for the test: tiny models gain nothing from threads, and on a busy machine
    OpenMP's waiting costs seconds per call. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(name="registry")
def _registry():
    """The installed plugins' registry, made the process-wide one for this test."""
    registry = load_registry(disabled=())
    set_registry(registry)
    return registry


@pytest.fixture(name="made_deferrals")
def _made_deferrals(monkeypatch) -> list[_deferred.DeferredLinears]:
    """Every ``DeferredLinears`` the decoder makes during the test (one per decode differentiated step by step)."""
    made: list[_deferred.DeferredLinears] = []

    class Counted(_deferred.DeferredLinears):
        def __init__(self) -> None:
            made.append(self)
            super().__init__()

    monkeypatch.setattr(_model, "DeferredLinears", Counted)
    return made


@pytest.fixture(name="tiny")
def _tiny() -> quatrain.ModelConfig:
    return quatrain.ModelConfig.preset("tiny")


def random_batch(config: quatrain.ModelConfig, lengths: list[int], T: int | None = None):
    """Word vectors (B, T, E) and a left-aligned mask for the given lengths."""
    T = T or max(lengths)
    x = torch.randn(len(lengths), T, config.embed_dim)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


@pytest.fixture(name="make_batch")
def _make_batch():
    """``make_batch(config, lengths, T=None) -> (x, mask)``: random word vectors, left-aligned mask."""
    return random_batch


POETRY_WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "my",
    "thy",
    "thou",
    "love",
    "rose",
    "sea",
    "night",
    "day",
    "light",
    "dark",
    "sweet",
    "fair",
    "old",
    "young",
    "heart",
    "eyes",
    "sing",
    "song",
    "wind",
    "sky",
    "star",
    "moon",
    "sun",
    ",",
    ".",
    ";",
    "!",
    "?",
    "'",
    "'s",
    "-",
    "n't",
]


def write_poetry_files(folder):
    """A tiny corpus (18 poems, blank-line separated) and 16-d GloVe-format vectors for its words."""
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = folder / "vectors.txt"
    vectors.write_text(
        "\n".join(f"{w} " + " ".join(f"{v:.5f}" for v in rng.standard_normal(16)) for w in POETRY_WORDS) + "\n",
        encoding="utf-8",
    )
    content = [w for w in POETRY_WORDS if w.isalpha()]
    poems = []
    for p in range(18):
        lines = []
        for line in range(2 + p % 3):
            words = [content[(p * 7 + line * 3 + k * 5) % len(content)] for k in range(3 + (p + line) % 4)]
            lines.append(" ".join(words).capitalize() + (",", ".", ";")[line % 3])
        poems.append("\n".join(lines))
    corpus = folder / "poems.txt"
    corpus.write_text("\n\n".join(poems) + "\n", encoding="utf-8")
    return corpus, vectors


@pytest.fixture(name="poetry_files")
def _poetry_files(tmp_path):
    """``(corpus, vectors)`` paths of write_poetry_files in this test's folder."""
    return write_poetry_files(tmp_path)


@pytest.fixture(name="shared_poetry_files", scope="module")
def _shared_poetry_files(tmp_path_factory):
    """The same files, once per test module (for module-scoped training runs)."""
    return write_poetry_files(tmp_path_factory.mktemp("poetry"))


@pytest.fixture(name="install")
def _install(tmp_path, monkeypatch):
    """``install(dist, {entry_name: source})``: a fake installed distribution with quatrain entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist: str, plugins: dict[str, str], capabilities: dict[str, str] | None = None) -> None:
        """``capabilities``: backend name -> source of a module defining CAPS (group quatrain.capabilities)."""
        info = tmp_path / f"{dist}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        groups: dict[str, list[str]] = {"quatrain": [], "quatrain.capabilities": []}
        for group, entries, suffix in (
            ("quatrain", plugins, ""),
            ("quatrain.capabilities", capabilities or {}, "_caps"),
        ):
            for entry, source in entries.items():
                module = f"{dist}_{entry}{suffix}".replace("-", "_")
                (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
                monkeypatch.delitem(sys.modules, module, raising=False)  # each test imports its own source
                groups[group].append(f"{entry} = {module}" + (":CAPS" if suffix else ""))
        text = "".join(f"[{group}]\n" + "".join(f"{line}\n" for line in lines) for group, lines in groups.items())
        (info / "entry_points.txt").write_text(text)

    return install
