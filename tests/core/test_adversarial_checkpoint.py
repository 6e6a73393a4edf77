"""Issue 12's adversarial checkpoints: each is refused with one clear line, before anything large is built."""

from __future__ import annotations

import json
import struct
import warnings

import pytest
import safetensors.torch
import torch

import quatrain
from quatrain import CheckpointError, CheckpointLayoutError, ConfigError
from quatrain import _checkpoint as checkpoint_module


@pytest.fixture(name="saved")
def _saved(tmp_path, tiny):
    model = quatrain.Autoencoder(tiny)
    path = quatrain.save(model, tmp_path / "m.safetensors", extra={"note": {"epochs": 3}})
    return model, path


def _rewrite(path, metadata=None, tensors=None):
    loaded = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    safetensors.torch.save_file(
        tensors(loaded) if tensors else loaded, str(path), metadata=metadata(meta) if metadata else meta
    )


def _with_config(path, **changes):
    _rewrite(path, metadata=lambda m: {**m, "config": json.dumps({**json.loads(m["config"]), **changes})})


class _Spy:
    """Records the default device of every Autoencoder the checkpoint module builds."""

    def __init__(self, monkeypatch):
        self.devices: list[str] = []
        real = checkpoint_module.Autoencoder
        spy = self

        def build(*args, **kwargs):
            spy.devices.append(torch.get_default_device().type)
            return real(*args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "Autoencoder", build)


def test_a_config_larger_than_its_tensors_is_refused_before_building(saved, monkeypatch):
    """Finding 1: hidden_size 8192 over tiny tensors used to build a 9.5 GB model before refusing."""
    _, path = saved
    _with_config(path, hidden_size=8192)
    spy = _Spy(monkeypatch)
    with pytest.raises(CheckpointLayoutError, match="has shape .* the model expects"):
        quatrain.load(path)
    assert spy.devices and set(spy.devices) == {"meta"}, spy.devices


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_size", 10**6), ("embed_dim", 10**7), ("num_layers", 1000), ("max_len", 10**9), ("num_heads", 10**6)],
)
def test_config_fields_are_bounded(saved, field, value):
    """Finding 1: hidden_size 10**6 asked for 4 TB and surfaced as a raw RuntimeError."""
    _, path = saved
    _with_config(path, **{field: value})
    with pytest.raises(CheckpointError, match=f"bad config in metadata: {field} must be"):
        quatrain.load(path)
    with pytest.raises(ConfigError, match=f"{field} must be"):
        quatrain.ModelConfig.preset("tiny", **{field: value})


def test_a_header_larger_than_the_bound_is_refused_unread(tmp_path):
    """Finding 12: the header's length is checked before it is read or parsed."""
    path = tmp_path / "big.safetensors"
    size = checkpoint_module.MAX_HEADER_BYTES + 1
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", size))
        f.truncate(8 + size)  # sparse: a real header of that size, all zeros
    with pytest.raises(CheckpointError, match="header of .* bytes is over the"):
        quatrain.read_info(path)


def test_too_many_tensors_are_refused_before_they_are_listed(saved, monkeypatch):
    """Finding 12: 1M empty tensors took 29 s in load before 'missing tensor(s)'."""
    _, path = saved
    many = {f"t{i}": torch.zeros(0) for i in range(checkpoint_module.MAX_TENSORS + 1)}
    _rewrite(path, tensors=lambda t: many)
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("opened the file with safetensors"))
    with pytest.raises(CheckpointError, match=f"holds {len(many):,} tensors; quatrain reads at most"):
        quatrain.read_info(path)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.int64, torch.uint8])
def test_non_float_checkpoints_are_refused(saved, dtype):
    """Finding 4: an int8 checkpoint was cast to float32 and evaluated to loss 6.5e16."""
    _, path = saved
    _rewrite(path, tensors=lambda t: {k: v.to(dtype) for k, v in t.items()})
    with pytest.raises(CheckpointError, match=f"stores {str(dtype).removeprefix('torch.')} tensors"):
        quatrain.load(path)
    with pytest.raises(CheckpointError, match="not float"):
        checkpoint_module.check_loadable(quatrain.read_info(path))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_checkpoints_load_with_a_warning_that_says_so(saved, dtype):
    """Finding 4: float16/bfloat16/float64 are cast to float32 knowingly: a warning names the cast."""
    model, path = saved
    _rewrite(path, tensors=lambda t: {k: v.to(dtype) for k, v in t.items()})
    with pytest.warns(UserWarning, match=f"stores {str(dtype).removeprefix('torch.')} tensors; .* cast to float32"):
        loaded = quatrain.load(path)
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, model.state_dict()[key].to(dtype).float(), rtol=0, atol=0)


def test_float32_checkpoints_load_without_a_warning(saved):
    _, path = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quatrain.load(path)


def test_deeply_nested_metadata_is_one_clear_error(saved):
    """Finding 13: a 100k-deep nested JSON in the metadata printed 'internal error: RecursionError'."""
    _, path = saved
    deep = "[" * 100_000 + "]" * 100_000
    _rewrite(path, metadata=lambda m: {**m, "note": deep})
    with pytest.raises(CheckpointError, match="metadata 'note' nests too deeply"):
        quatrain.read_info(path)
    _rewrite(path, metadata=lambda m: {**m, "note": "1", "config": deep})
    with pytest.raises(CheckpointError, match="metadata 'config' nests too deeply"):
        quatrain.read_info(path)


def test_a_5000_digit_int_in_the_config_is_one_clear_error(saved):
    """Finding 13: Python's int-digit limit raised a ValueError that became 'internal error'."""
    _, path = saved
    _rewrite(
        path,
        metadata=lambda m: {**m, "config": m["config"].replace('"hidden_size": 32', '"hidden_size": ' + "9" * 5000)},
    )
    with pytest.raises(CheckpointError, match="metadata 'config' is not JSON .*digits"):
        quatrain.read_info(path)


def test_a_huge_metadata_value_is_shortened_in_the_error(saved):
    """Finding 17: a 20 MB metadata value gave a 20 MB error line."""
    _, path = saved
    _with_config(path, rnn="x" * 1_000_000)
    with pytest.raises(CheckpointError) as caught:
        quatrain.read_info(path)
    assert len(str(caught.value)) < 400, len(str(caught.value))
    assert "rnn must be one of" in str(caught.value)


def test_check_loadable_is_what_load_checks(saved):
    """Issue 10: one function checks a checkpoint's tensors for both load and inspect."""
    _, path = saved
    checkpoint_module.check_loadable(quatrain.read_info(path))  # a good file passes
    _rewrite(path, tensors=lambda t: {**t, "decoder.out.bias": torch.zeros(3)})
    info = quatrain.read_info(path)
    with pytest.raises(CheckpointLayoutError, match="decoder.out.bias") as from_check:
        checkpoint_module.check_loadable(info)
    with pytest.raises(CheckpointLayoutError) as from_load:
        quatrain.load(path)
    assert str(from_check.value) == str(from_load.value)
