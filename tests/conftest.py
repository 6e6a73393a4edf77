"""Shared fixtures: a registry with only the plugins a test asks for, tiny configs, seeded RNG."""

from __future__ import annotations

import pytest
import torch

import quatrain
from quatrain.registry import load_registry, set_registry


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Every test starts from the installed entry points, rediscovered; nothing leaks between tests."""
    set_registry(None)
    yield
    set_registry(None)


@pytest.fixture(name="registry")
def _registry():
    """The installed plugins' registry, made the process-wide one for this test."""
    registry = load_registry(disabled=())
    set_registry(registry)
    return registry


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
