"""Autoencoder.to_backend: a live model changes backend, keeping its function, device, dtype and mode."""

from __future__ import annotations

import pytest
import torch

import quatrain
from quatrain.registry import OWN_DISTRIBUTION, load_registry
from tests.conftest import random_batch

BUILTINS = sorted(n for n, e in load_registry(disabled=()).backends.items() if e.distribution == OWN_DISTRIBUTION)
"""The project's own backends, from the registry (every one must take over a live model)."""


@pytest.mark.parametrize("target", [name for name in BUILTINS if name != "naive"])
def test_switched_model_computes_the_same_function(registry, tiny, target):
    model = quatrain.Autoencoder(tiny, "naive").eval()
    x, mask = random_batch(tiny, [6, 3, 1, 0])
    with torch.no_grad():
        want = model(x, mask, teacher_forcing=1.0).reconstruction
        got = model.to_backend(target)(x, mask, teacher_forcing=1.0).reconstruction
    assert model.backend == target
    assert model.layout == model.decoder.attention.capabilities.layout
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_switch_keeps_dtype_and_training_mode(registry, tiny):
    model = quatrain.Autoencoder(tiny, "naive").to(torch.bfloat16).train()
    model.to_backend("cached-decoder")
    attention = model.decoder.attention
    assert all(p.dtype == torch.bfloat16 for p in attention.parameters())
    assert attention.training
    model.eval().to_backend("fused-qkv")
    assert not model.decoder.attention.training


def test_switch_refuses_a_model_without_attention(registry, tiny):
    model = quatrain.Autoencoder(tiny.evolve(attention="none"))
    with pytest.raises(quatrain.ConfigError, match="no attention"):
        model.to_backend("fused-qkv")


def test_switch_refuses_an_unknown_backend(registry, tiny):
    model = quatrain.Autoencoder(tiny)
    with pytest.raises(quatrain.UnknownBackendError, match="unknown backend 'flash-x'"):
        model.to_backend("flash-x")
    assert model.backend == "naive"


@pytest.mark.parametrize(
    ("saved_with", "loaded_with"), [(name, BUILTINS[(i + 1) % len(BUILTINS)]) for i, name in enumerate(BUILTINS)]
)
def test_checkpoints_load_across_backends(registry, tiny, tmp_path, saved_with, loaded_with):
    model = quatrain.Autoencoder(tiny, saved_with).eval()
    path = quatrain.save(model, tmp_path / "m.safetensors")
    loaded = quatrain.load(path, backend=loaded_with).eval()
    assert loaded.backend == loaded_with
    x, mask = random_batch(tiny, [5, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, mask, teacher_forcing=1.0).reconstruction,
            model(x, mask, teacher_forcing=1.0).reconstruction,
            rtol=1e-5,
            atol=1e-6,
        )
