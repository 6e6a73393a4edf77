"""DecodeRNN: a sequential decode's RNN run step by step, differentiated in one call over the sequence."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import quatrain
from quatrain import _rnn
from quatrain._compare import compare, without_kinks
from quatrain._rnn import DecodeRNN, autocast_problem, single_layers

RNNS = ["lstm", "gru", "rnn"]


def decode_and_grads(model, x, mask, seed=3, teacher_forcing=0.5):
    torch.manual_seed(seed)  # the same coins
    out = model(x, mask, teacher_forcing=teacher_forcing).reconstruction
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).square().sum()
    names = [n for n, _ in model.named_parameters()]
    return loss, dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_the_one_call_backward_equals_autograd_through_every_step(tiny, make_batch, rnn, attention):
    """The 'steps' engine's training decode, float64, teacher forcing 0.5: loss and every parameter's
    gradient equal those of autograd through each step's RNN call, and the decoder's stacked RNN is never
    called (DecodeRNN's single-layer modules ran it)."""
    config = tiny.evolve(rnn=rnn, attention=attention, dropout=0.0)
    model = quatrain.Autoencoder(config, None if attention == "none" else "deferred-kv", engine="steps").double()
    x, mask = make_batch(config, [6, 4, 1, 0])
    x = x.double()
    stepwise = copy.deepcopy(model)
    stepwise.decoder.sequence_backward = False
    calls: list[int] = []
    model.decoder.rnn.register_forward_hook(lambda *_: calls.append(1))
    loss, grads = decode_and_grads(model, x, mask)
    want_loss, want = decode_and_grads(stepwise, x, mask)
    assert calls == []
    torch.testing.assert_close(loss, want_loss)
    assert grads.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(grads[name], want[name], msg=name)


def test_with_inter_layer_dropout_the_kept_masks_give_autograds_gradients():
    """A 3-layer LSTM with dropout 0.4 between layers, float64: each step's masks are drawn once and kept;
    the one-call backward's gradients (weights, input projection, initial state, step 0's input) equal
    autograd's through the same steps with those masks."""
    torch.manual_seed(0)
    E, H, L, B, T = 5, 6, 3, 4, 7
    rnn = nn.LSTM(H, H, L, batch_first=True, dropout=0.4).double().train()
    projection = nn.Linear(E, H).double()
    h0, c0 = (torch.randn(L, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    first = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    inputs = [first, *(torch.randn(B, E, dtype=torch.float64) for _ in range(T - 1))]
    scales = [torch.randn(B, H, dtype=torch.float64) for _ in range(T)]
    leaves = [*rnn.parameters(), *projection.parameters(), h0, c0, first]

    decode = DecodeRNN(rnn, single_layers(rnn, first.device, torch.float64), projection, (h0, c0), first)
    loss = sum((decode.step(inp) * s).sum() for inp, s in zip(inputs, scales, strict=True))
    masks = [list(m) for m in decode.masks]
    assert all(len(m) == L - 1 for m in masks) and any((m == 0).any() for step in masks for m in step)
    got = torch.autograd.grad(loss, leaves)

    states = [(h0[i : i + 1], c0[i : i + 1]) for i in range(L)]
    want_loss = 0
    for t, inp in enumerate(inputs):
        x = projection(inp)
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


def test_a_target_that_needs_a_gradient_takes_the_step_by_step_backward(tiny, make_batch):
    """Forced steps read the targets: when those need a gradient, an RNN output's gradient reaches later
    inputs, so the decode differentiates each step's RNN call (the decoder's RNN runs), and the input's
    gradient is autograd's."""
    config = tiny.evolve(dropout=0.0)
    model = quatrain.Autoencoder(config, engine="steps").double()
    x, mask = make_batch(config, [5, 3])
    calls: list[int] = []
    model.decoder.rnn.register_forward_hook(lambda *_: calls.append(1))
    xi = x.double().requires_grad_()
    torch.manual_seed(2)
    out = model(xi, mask, teacher_forcing=0.9).reconstruction
    (gx,) = torch.autograd.grad(out.square().sum(), xi)
    assert len(calls) == x.shape[1]
    assert gx[:, :-1].abs().sum() > 0  # forced inputs carried gradient back into x


def test_a_step_after_the_first_with_a_gradient_is_refused():
    rnn, projection = nn.GRU(3, 3, 1, batch_first=True), nn.Linear(2, 3)
    first = torch.randn(2, 2)
    decode = DecodeRNN(rnn, single_layers(rnn, first.device, torch.float32), projection, torch.zeros(1, 2, 3), first)
    decode.step(first)
    with pytest.raises(RuntimeError, match="only step 0's input may carry a gradient"):
        decode.step(torch.randn(2, 2, requires_grad=True))


def test_the_backward_runs_once_a_decode_and_leaves_nothing_behind(tiny, make_batch, monkeypatch):
    """One sequence backward per decode (not one per step), and its records are cleared after it."""
    config = tiny.evolve(dropout=0.0)
    model = quatrain.Autoencoder(config, engine="steps")
    x, mask = make_batch(config, [5, 3])
    made: list[DecodeRNN] = []
    backwards: list[int] = []

    class Counted(DecodeRNN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def backward(self, needed):
            backwards.append(len(self.projected))
            return super().backward(needed)

    monkeypatch.setattr(quatrain._model, "DecodeRNN", Counted)
    model(x, mask, teacher_forcing=0.5).reconstruction.sum().backward()
    assert backwards == [x.shape[1]]
    assert len(made) == 1 and made[0].projected == [] and made[0].grads == {}
    with torch.no_grad():  # inference: the plain step, no DecodeRNN
        model(x, mask)
    assert len(made) == 1


@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_under_bf16_autocast_the_one_call_backward_keeps_to_the_rule(tiny, make_batch, attention):
    """Under bf16 autocast (``--precision bf16``): loss and every gradient of the one-call backward, against
    a float64 golden, stay within the comparison rule's bound of the step-by-step backward's own error."""
    config = tiny.evolve(attention=attention, dropout=0.0)
    if (problem := autocast_problem(config.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    torch.manual_seed(0)
    model = without_kinks(quatrain.Autoencoder(config, None if attention == "none" else "deferred-kv", engine="steps"))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16())  # weights bfloat16 holds exactly: the golden starts from the same values
    x, mask = make_batch(config, [6, 4, 1])
    x = x.bfloat16().float()

    def run(m, sequence, autocast):
        m.decoder.sequence_backward = sequence
        dtype = next(m.parameters()).dtype
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, grads = decode_and_grads(m, x.to(dtype), mask)
        return {"loss": loss.detach().double(), **{f"grad {n}": g.double() for n, g in grads.items()}}

    golden = run(copy.deepcopy(model).double(), sequence=False, autocast=False)
    reference = run(model, sequence=False, autocast=True)
    candidate = run(model, sequence=True, autocast=True)
    result = compare(golden, reference, candidate, dtype=torch.bfloat16, gradient_kind="model gradient")
    assert result.passed, result.format()


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
