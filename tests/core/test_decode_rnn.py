"""DecodeRNN: a sequential decode's RNN run step by step, differentiated in one call over the sequence
(the model-level tests are tests/core/test_replay.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quatrain
from quatrain import _rnn
from quatrain._rnn import DecodeRNN, single_layers


def test_with_inter_layer_dropout_the_kept_masks_give_autograds_gradients():
    """A 3-layer LSTM with dropout 0.4 between layers, float64: each step's masks are drawn once and kept;
    the one-call backward's gradients (weights, input projection, initial state, every input) equal
    autograd's through the same steps with those masks, and the sequence is the steps' outputs."""
    torch.manual_seed(0)
    E, H, L, B, T = 5, 6, 3, 4, 7
    rnn = nn.LSTM(H, H, L, batch_first=True, dropout=0.4).double().train()
    projection = nn.Linear(E, H).double()
    h0, c0 = (torch.randn(L, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    inputs = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    scales = [torch.randn(B, H, dtype=torch.float64) for _ in range(T)]
    leaves = [*rnn.parameters(), *projection.parameters(), h0, c0, inputs]

    decode = DecodeRNN(rnn, single_layers(rnn, inputs.device, torch.float64), projection, (h0, c0))
    stepped = [decode.advance(inputs[:, t]) for t in range(T)]
    assert not any(out.requires_grad for out in stepped)
    masks = [list(m) for m in decode.masks]
    sequence = decode.sequence(inputs)
    torch.testing.assert_close(sequence.detach(), torch.stack(stepped, 1), rtol=0, atol=0)
    loss = sum((sequence[:, t] * s).sum() for t, s in enumerate(scales))
    assert all(len(m) == L - 1 for m in masks) and any((m == 0).any() for step in masks for m in step)
    got = torch.autograd.grad(loss, leaves)

    states = [(h0[i : i + 1], c0[i : i + 1]) for i in range(L)]
    want_loss = 0
    for t in range(T):
        x = projection(inputs[:, t])
        for layer in range(L):
            if layer > 0:
                x = x * masks[t][layer - 1]
            params = [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            out, h, c = torch._VF.lstm(x[:, None], states[layer], params, True, 1, 0.0, False, False, True)
            states[layer] = (h, c)
            x = out[:, 0]
        want_loss = want_loss + (x * scales[t]).sum()
    want = torch.autograd.grad(want_loss, leaves)
    torch.testing.assert_close(loss, want_loss)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_single_layers_keep_the_rnns_kind_and_settings():
    rnn = nn.RNN(3, 4, 2, nonlinearity="relu", bias=False, batch_first=True)
    layers = single_layers(rnn, torch.device("cpu"), torch.float64)
    assert [type(m) for m in layers] == [nn.RNN, nn.RNN]
    assert [m.input_size for m in layers] == [3, 4]
    assert all(m.nonlinearity == "relu" and not m.bias and m.num_layers == 1 for m in layers)
    assert all(p.dtype == torch.float64 for m in layers for p in m.parameters())
    assert _rnn._layer_weights(layers[1], 0)[0].shape == (4, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_on_cuda_the_single_layers_are_one_chunk_and_never_compacted(precision):
    """cuDNN compacts an RNN's weights at every call unless they are one chunk; ``flatten_parameters``
    leaves bfloat16 modules in pieces. A seed-preset train step under either precision warns of no
    compaction, and each single-layer module's weights share one storage."""
    import warnings

    config = quatrain.ModelConfig.preset("seed")
    model = quatrain.Autoencoder(config.evolve(attention="none")).cuda()
    x = torch.randn(4, 6, config.embed_dim, device="cuda")
    mask = torch.ones(4, 6, dtype=torch.bool, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = quatrain.TrainStep(model, teacher_forcing=0.5, cuda_graph=False, precision=precision)
        step(x, mask)
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]
    made = model.decoder._single_layers._made
    assert made and all(
        len({w.untyped_storage().data_ptr() for w in module._flat_weights}) == 1
        for modules in made.values()
        for module in modules
    )
