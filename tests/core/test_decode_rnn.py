"""DecodeRNN: a sequential decode's RNN run step by step, differentiated in one call over the sequence
(the model-level tests are tests/core/test_replay.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quatrain
from quatrain import _rnn
from quatrain._rnn import DecodeRNN, single_layers

CALLS = {nn.LSTM: torch._VF.lstm, nn.GRU: torch._VF.gru, nn.RNN: torch._VF.rnn_tanh}


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN], ids=["lstm", "gru", "rnn"])
@pytest.mark.parametrize(("rnn_bias", "projection_bias"), [(True, True), (False, True), (True, False), (False, False)])
def test_the_one_call_backward_equals_autograd_through_the_steps(kind, rnn_bias, projection_bias):
    """A 3-layer RNN with dropout 0.4 between layers, float64: the masks are drawn once for every step; the
    steps (the projection folded into the first layer) give the sequence, and the one-call backward's
    gradients (every weight, the projection's, the initial state, every input) equal autograd's through the
    unfolded steps with those masks, whichever of the RNN and the projection has a bias."""
    torch.manual_seed(0)
    E, H, L, B, T = 5, 6, 3, 4, 7
    rnn = kind(H, H, L, bias=rnn_bias, batch_first=True, dropout=0.4).double().train()
    projection = nn.Linear(E, H, bias=projection_bias).double()
    h0, c0 = (torch.randn(L, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    state = (h0, c0) if kind is nn.LSTM else h0
    inputs = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    scales = torch.randn(B, T, H, dtype=torch.float64)
    leaves = [*rnn.parameters(), *projection.parameters(), h0, *([c0] if kind is nn.LSTM else []), inputs]

    decode = DecodeRNN(rnn, single_layers(rnn, projection, inputs.device, torch.float64), projection, state, T)
    stepped = [decode.advance(inputs[:, t]) for t in range(T)]
    assert not any(out.requires_grad for out in stepped)
    masks = decode.masks.clone()  # (L - 1, T, B, H)
    assert (masks == 0).any() and (masks > 1).any()
    sequence = decode.sequence(inputs)
    torch.testing.assert_close(sequence.detach(), torch.stack(stepped, 1), rtol=0, atol=0)
    got = torch.autograd.grad((sequence * scales).sum(), leaves)

    names = ["weight_ih", "weight_hh", *(["bias_ih", "bias_hh"] if rnn_bias else [])]
    states = [(h0[i : i + 1], c0[i : i + 1]) if kind is nn.LSTM else h0[i : i + 1] for i in range(L)]
    outputs = []
    for t in range(T):
        x = projection(inputs[:, t])
        for layer in range(L):
            if layer > 0:
                x = x * masks[layer - 1, t]
            params = [getattr(rnn, f"{n}_l{layer}") for n in names]
            out, *new = CALLS[kind](x[:, None], states[layer], params, rnn_bias, 1, 0.0, False, False, True)
            states[layer] = tuple(new) if kind is nn.LSTM else new[0]
            x = out[:, 0]
        outputs.append(x)
    want_sequence = torch.stack(outputs, 1)
    torch.testing.assert_close(sequence, want_sequence)
    want = torch.autograd.grad((want_sequence * scales).sum(), leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_an_inference_decode_keeps_no_outputs_and_steps_the_same():
    """keep=False (no replay follows): the same steps, dropout masks indexed by the step count, no output
    held for ``sequence``, which refuses."""
    rnn = nn.LSTM(4, 4, 2, batch_first=True, dropout=0.5).double().train()
    projection = nn.Linear(3, 4).double()
    state = tuple(torch.randn(2, 2, 4, dtype=torch.float64) for _ in range(2))
    inputs = torch.randn(2, 5, 3, dtype=torch.float64)
    outs = []
    for keep in (True, False):
        torch.manual_seed(1)  # the same masks
        decode = DecodeRNN(
            rnn, single_layers(rnn, projection, inputs.device, torch.float64), projection, state, 5, keep
        )
        outs.append(torch.stack([decode.advance(inputs[:, t]) for t in range(5)], 1))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert decode.outputs == [] and decode.steps == 5
    with pytest.raises(RuntimeError, match="keeps no outputs"):
        decode.sequence(inputs)


def test_single_layers_keep_the_rnns_kind_and_settings():
    """The first takes the projection's input, with a bias if the RNN or the projection has one."""
    rnn = nn.RNN(3, 4, 2, nonlinearity="relu", bias=False, batch_first=True)
    layers = single_layers(rnn, nn.Linear(5, 3), torch.device("cpu"), torch.float64)
    assert [type(m) for m in layers] == [nn.RNN, nn.RNN]
    assert [m.input_size for m in layers] == [5, 4]
    assert [m.bias for m in layers] == [True, False]
    assert all(m.nonlinearity == "relu" and m.num_layers == 1 for m in layers)
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
