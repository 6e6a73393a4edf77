"""Checkpoints: bit-identical round trips, atomic writes, and one clear error for every bad file."""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct

import pytest
import safetensors.torch
import torch

import quatrain
from quatrain import CheckpointError, CheckpointLayoutError


@pytest.fixture(name="saved")
def _saved(tmp_path, tiny):
    model = quatrain.Autoencoder(tiny)
    path = quatrain.save(model, tmp_path / "m.safetensors", extra={"note": {"epochs": 3}})
    return model, path


@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_round_trip_is_bit_identical(tmp_path, tiny, make_batch, attention):
    config = tiny.evolve(attention=attention)
    model = quatrain.Autoencoder(config).eval()
    path = quatrain.save(model, tmp_path / "m.safetensors")
    loaded = quatrain.load(path).eval()
    assert loaded.config == config and loaded.backend == model.backend
    x, mask = make_batch(config, [6, 3])
    for tf in (0.0, 1.0):
        assert torch.equal(
            model(x, mask, teacher_forcing=tf).reconstruction, loaded(x, mask, teacher_forcing=tf).reconstruction
        )


def test_metadata(saved):
    model, path = saved
    info = quatrain.read_info(path)
    assert info.backend == "naive" and info.layout == "split-qkvo"
    assert info.num_parameters == model.num_parameters()
    assert info.metadata["format"] == "quatrain-checkpoint/1"
    assert info.metadata["torch_version"] == torch.__version__
    assert json.loads(info.metadata["note"]) == {"epochs": 3}


def test_save_is_atomic_and_leaves_nothing_on_failure(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(CheckpointError, match="No space left on device"):
        quatrain.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_saved_file_has_the_usual_permissions(saved):
    _, path = saved
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_save_into_missing_folder(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="does not exist"):
        quatrain.save(quatrain.Autoencoder(tiny), tmp_path / "nope" / "m.safetensors")


def _rewrite(path, tensors=None, metadata=None):
    loaded = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    safetensors.torch.save_file(
        tensors(loaded) if tensors else loaded, str(path), metadata=metadata(meta) if metadata else meta
    )


def _pickled(path):
    path.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}))


def _random(path):
    path.write_bytes(bytes(range(256)) * 4)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:-100])


def _huge_header(path):
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")


CASES = {
    "missing": (lambda p: p.unlink(), "does not exist"),
    "pickled-pt": (_pickled, "not a readable safetensors file"),
    "random-bytes": (_random, "not a readable safetensors file"),
    "truncated": (_truncated, "not a readable safetensors file"),
    "huge-header": (_huge_header, "not a readable safetensors file"),
    "no-metadata": (lambda p: _rewrite(p, metadata=lambda m: None), "no quatrain metadata"),
    "no-config": (
        lambda p: _rewrite(p, metadata=lambda m: {k: v for k, v in m.items() if k != "config"}),
        "metadata lacks 'config'",
    ),
    "config-not-json": (lambda p: _rewrite(p, metadata=lambda m: {**m, "config": "{oops"}), "'config' is not JSON"),
    "config-bad-value": (
        lambda p: _rewrite(p, metadata=lambda m: {**m, "config": json.dumps({**json.loads(m["config"]), "rnn": "x"})}),
        "bad config in metadata: rnn must be one of",
    ),
    "unknown-layout": (
        lambda p: _rewrite(p, metadata=lambda m: {**m, "layout": "mystery"}),
        "unknown layout 'mystery'",
    ),
    "unknown-backend": (lambda p: _rewrite(p, metadata=lambda m: {**m, "backend": "gone"}), "unknown backend 'gone'"),
    "missing-key": (
        lambda p: _rewrite(p, tensors=lambda t: {k: v for k, v in t.items() if k != "decoder.out.bias"}),
        "missing tensor.*decoder.out.bias",
    ),
    "extra-key": (
        lambda p: _rewrite(p, tensors=lambda t: {**t, "decoder.spare": torch.zeros(2)}),
        "unexpected tensor.*decoder.spare",
    ),
    "wrong-shape": (
        lambda p: _rewrite(p, tensors=lambda t: {**t, "decoder.out.bias": torch.zeros(3)}),
        r"tensor 'decoder.out.bias' has shape \(3,\), the model expects \(16,\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoints_get_one_clear_error(saved, case):
    _, path = saved
    damage, match = CASES[case]
    damage(path)
    with pytest.raises(CheckpointError, match=match):
        quatrain.load(path)


def test_layout_errors_are_their_own_class(saved):
    _, path = saved
    _rewrite(path, tensors=lambda t: {**t, "decoder.out.bias": torch.zeros(3)})
    with pytest.raises(CheckpointLayoutError):
        quatrain.load(path)


def test_never_unpickles(saved, monkeypatch):
    _, path = saved
    _pickled(path)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(CheckpointError):
        quatrain.load(path)
