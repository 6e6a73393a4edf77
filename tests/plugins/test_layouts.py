"""The built-in layout converters: exact, invertible bit for bit, and refusing what is not their layout."""

from __future__ import annotations

import pytest
import torch

import quatrain
from quatrain.plugins import _layouts

H = 8


def split_state() -> dict[str, torch.Tensor]:
    return {f"w_{n}.weight": torch.randn(H, H) for n in "qkvo"}


@pytest.mark.parametrize(
    ("forward", "inverse"),
    [(_layouts.split_to_fused, _layouts.fused_to_split), (_layouts.split_to_q_kv, _layouts.q_kv_to_split)],
    ids=["fused-qkv-o", "q-kv-o"],
)
def test_round_trip_is_bit_identical(forward, inverse):
    state = split_state()
    back = inverse(forward(state))
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key
        assert back[key].data_ptr() != tensor.data_ptr()  # fresh storage: safetensors refuses shared tensors


def test_fused_rows_are_q_then_k_then_v():
    state = split_state()
    fused = _layouts.split_to_fused(state)["w_qkv.weight"]
    assert torch.equal(fused[:H], state["w_q.weight"])
    assert torch.equal(fused[H : 2 * H], state["w_k.weight"])
    assert torch.equal(fused[2 * H :], state["w_v.weight"])


def test_converter_names_missing_and_unexpected_keys():
    state = split_state()
    del state["w_k.weight"]
    state["bias"] = torch.zeros(H)
    with pytest.raises(quatrain.CheckpointLayoutError, match=r"missing w_k\.weight; unexpected bias"):
        _layouts.split_to_fused(state)


def test_converter_rejects_a_misshapen_fused_weight():
    with pytest.raises(quatrain.CheckpointLayoutError, match=r"w_qkv\.weight has shape \(7, 8\)"):
        _layouts.fused_to_split({"w_qkv.weight": torch.zeros(7, H), "w_o.weight": torch.zeros(H, H)})


@pytest.mark.parametrize("target", ["fused-qkv", "sdpa-flash", "cached-decoder", "compiled", "mps"])
def test_naive_to_any_backend_and_back_is_bit_identical(registry, tiny, target):
    model = quatrain.Autoencoder(tiny, "naive")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.to_backend(target)
    assert model.backend == target
    model.to_backend("naive")
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_fused_to_q_kv_goes_through_split(registry):
    assert registry.layouts.path("fused-qkv-o", "q-kv-o") == ["fused-qkv-o", "split-qkvo", "q-kv-o"]
