"""The autoencoder's contract: right-shifted teacher forcing, pads that change nothing, parallel == sequential."""

from __future__ import annotations

import pytest
import torch

import quatrain
from quatrain._rnn import rnn_cell_step, sinusoids

RNNS = ["lstm", "gru", "rnn"]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_output_t_never_sees_target_t(tiny, make_batch, attention):
    """With teacher forcing 1.0, d out[t] / d x[t] is exactly zero and d out[t] / d x[t-1] is not."""
    model = quatrain.Autoencoder(tiny.evolve(attention=attention, memory_positions=False))
    x, mask = make_batch(tiny, [6, 6])
    # Only the decoder's teacher-forced inputs may carry the gradient: the encoder also reads x.
    z, memory = model.encoder(x, mask.sum(1))
    targets = x.clone().requires_grad_(True)
    out, _ = model.decoder(z.detach(), memory.detach(), mask, 6, targets=targets, teacher_forcing=1.0)
    t = 3
    (grad,) = torch.autograd.grad(out[:, t].sum(), targets)
    assert torch.count_nonzero(grad[:, t:]) == 0
    assert grad[:, t - 1].abs().sum() > 0


@pytest.mark.parametrize("rnn", RNNS)
def test_pads_change_nothing(tiny, make_batch, rnn):
    config = tiny.evolve(rnn=rnn)
    model = quatrain.Autoencoder(config).eval()
    x, mask = make_batch(config, [7, 4, 1])
    noisy = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    for tf in (0.0, 1.0):
        a, b = model(x, mask, teacher_forcing=tf), model(noisy, mask, teacher_forcing=tf)
        torch.testing.assert_close(a.bottleneck, b.bottleneck, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.reconstruction[mask], b.reconstruction[mask], rtol=0, atol=1e-6)


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_parallel_path_equals_step_by_step(tiny, make_batch, monkeypatch, rnn, attention):
    """Teacher forcing 1.0: one RNN call + all queries at once == the step loop, outputs and gradients."""
    config = tiny.evolve(rnn=rnn, attention=attention)
    model = quatrain.Autoencoder(config)
    x, mask = make_batch(config, [9, 5, 2])

    def run():
        model.zero_grad()
        out = model(x, mask, teacher_forcing=1.0)
        quatrain.reconstruction_loss(out.reconstruction, x, mask).backward()
        return out.reconstruction.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    par_out, par_grads = run()
    # A backend without a parallel path takes the step loop at teacher forcing 1.0: pretend to be one.
    monkeypatch.setattr(type(model.decoder), "can_run_parallel", property(lambda self: False))
    seq_out, seq_grads = run()
    assert rel_error(par_out, seq_out) <= 1e-5
    for name in seq_grads:
        assert rel_error(par_grads[name], seq_grads[name]) <= 1e-5, (name, rel_error(par_grads[name], seq_grads[name]))


def test_parallel_path_is_taken_at_teacher_forcing_one(tiny, make_batch, monkeypatch):
    model = quatrain.Autoencoder(tiny)
    x, mask = make_batch(tiny, [5, 3])
    calls = []
    monkeypatch.setattr(model.decoder, "step", lambda *args, **kwargs: calls.append(args))
    model(x, mask, teacher_forcing=1.0)
    assert calls == []


def test_teacher_forcing_zero_ignores_the_targets(tiny, make_batch):
    """Autoregressive decoding reads only z and the memory: changing the decoder's targets changes nothing."""
    model = quatrain.Autoencoder(tiny).eval()
    x, mask = make_batch(tiny, [6, 4])
    z, memory = model.encoder(x, mask.sum(1))
    a, _ = model.decoder(z, memory, mask, 6, targets=x, teacher_forcing=0.0)
    b, _ = model.decoder(z, memory, mask, 6, targets=torch.randn_like(x), teacher_forcing=0.0)
    assert torch.equal(a, b)


def test_attention_weights_only_when_asked(tiny, make_batch):
    model = quatrain.Autoencoder(tiny).eval()
    x, mask = make_batch(tiny, [6, 4])
    assert model(x, mask).attention is None
    for tf in (0.0, 1.0):
        weights = model(x, mask, teacher_forcing=tf, need_weights=True).attention
        assert weights is not None and weights.shape == (2, tiny.num_heads, 6, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, tiny.num_heads, 6))
        assert torch.all(weights[1, :, :, 4:] == 0)  # never on pads


def test_no_length_cap(tiny, make_batch):
    """Positions are computed for any length (the original's table stopped at 50)."""
    model = quatrain.Autoencoder(tiny).eval()
    x, mask = make_batch(tiny, [80])
    assert model(x, mask).reconstruction.shape == (1, 80, tiny.embed_dim)
    table = sinusoids(80, 6)
    assert table.shape == (80, 6) and torch.allclose(table[0], torch.tensor([0.0, 1, 0, 1, 0, 1]))


def test_memory_positions_option_changes_the_memory(tiny, make_batch):
    x, mask = make_batch(tiny, [5])
    torch.manual_seed(3)
    with_pos = quatrain.Autoencoder(tiny)
    torch.manual_seed(3)
    without = quatrain.Autoencoder(tiny.evolve(memory_positions=False))
    _, m1 = with_pos.encoder(x, mask.sum(1))
    _, m2 = without.encoder(x, mask.sum(1))
    torch.testing.assert_close(m1 - m2, sinusoids(5, tiny.hidden_size)[None].expand_as(m1))


@pytest.mark.parametrize(
    ("x_shape", "mask", "match"),
    [
        ((2, 4, 16), torch.tensor([[True, False, True, False], [True] * 4]), "left-aligned"),
        ((2, 4, 16), torch.ones(2, 4, dtype=torch.long), "bool"),
        ((2, 4, 15), torch.ones(2, 4, dtype=torch.bool), "expected x"),
    ],
    ids=["holes", "long-mask", "wrong-embed"],
)
def test_bad_inputs_are_refused(tiny, x_shape, mask, match):
    with pytest.raises(ValueError, match=match):
        quatrain.Autoencoder(tiny)(torch.randn(x_shape), mask)


def test_empty_row_is_finite(tiny, make_batch):
    model = quatrain.Autoencoder(tiny)
    x, mask = make_batch(tiny, [4, 0], T=4)
    out = model(x, mask, teacher_forcing=1.0)
    assert torch.isfinite(out.reconstruction).all()


def test_none_attention_refuses_a_backend(tiny):
    with pytest.raises(quatrain.ConfigError, match="no backend"):
        quatrain.Autoencoder(tiny.evolve(attention="none"), backend="naive")
    assert quatrain.Autoencoder(tiny.evolve(attention="none")).backend == "none"


def test_unknown_backend_lists_the_known_ones(tiny):
    with pytest.raises(quatrain.UnknownBackendError, match="unknown backend 'nope'; registered: .*naive"):
        quatrain.Autoencoder(tiny, backend="nope")


def test_seed_preset_has_the_originals_encoder_shape():
    """The seed preset's encoder: LSTM 2x512 over 300-d input, 128-d code (reference/seed-system.md 1.1)."""
    config = quatrain.ModelConfig.preset("seed")
    model = quatrain.Autoencoder(config)
    lstm = 4 * 512 * (300 + 512 + 2) + 4 * 512 * (512 + 512 + 2)
    assert sum(p.numel() for p in model.encoder.rnn.parameters()) == lstm
    assert model.encoder.to_bottleneck.out_features == 128
    assert model.decoder.attention is not None and model.decoder.attention.num_heads == 4


@pytest.mark.parametrize("rnn", RNNS)
def test_cell_step_equals_the_fused_rnn_step(tiny, rnn):
    """rnn_cell_step (what the compiled backend traces) == nn.LSTM/GRU/RNN for one step: outputs, state, grads."""
    config = tiny.evolve(rnn=rnn, num_layers=2)
    decoder = quatrain.Autoencoder(config).decoder
    x = torch.randn(3, config.hidden_size, requires_grad=True)
    state = decoder.initial_state(torch.randn(3, config.bottleneck_dim))
    fused, fused_state = decoder.rnn(x.unsqueeze(1), state)
    cells, cell_state = rnn_cell_step(decoder.rnn, x, state)
    torch.testing.assert_close(cells, fused.squeeze(1), rtol=1e-5, atol=1e-6)
    for a, b in zip(
        torch.utils._pytree.tree_leaves(cell_state), torch.utils._pytree.tree_leaves(fused_state), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (g_fused,) = torch.autograd.grad(fused.sum(), x)
    (g_cells,) = torch.autograd.grad(cells.sum(), x)
    torch.testing.assert_close(g_cells, g_fused, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("attention", ["encoder", "none"])
@pytest.mark.parametrize("teacher_forcing", [0.3, 0.9])
def test_forced_stretches_equal_the_step_loop(tiny, make_batch, rnn, attention, teacher_forcing):
    """0 < teacher forcing < 1: each stretch of forced steps as one RNN call == the step loop, forward and
    every gradient (parameters and input), for many random coin patterns."""
    config = tiny.evolve(rnn=rnn, attention=attention)
    stretches = quatrain.Autoencoder(config, engine="stretches")
    loop = quatrain.Autoencoder(config, engine="steps")
    loop.load_state_dict(stretches.state_dict())
    x, mask = make_batch(config, [9, 5, 2, 0])
    patterns = set()

    def run(model, seed):
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(seed)
        out = model(xi, mask, teacher_forcing=teacher_forcing)
        torch.manual_seed(seed)
        patterns.add(tuple((torch.rand(9) < teacher_forcing).tolist()))  # the coins the forward drew
        quatrain.reconstruction_loss(out.reconstruction, xi, mask).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.reconstruction.detach(), xi.grad.clone(), grads

    for seed in range(6):
        out_s, gx_s, grads_s = run(stretches, seed)
        out_l, gx_l, grads_l = run(loop, seed)
        assert rel_error(out_s, out_l) <= 1e-5
        assert rel_error(gx_s, gx_l) <= 1e-5
        assert grads_s.keys() == grads_l.keys()
        for name in grads_l:
            assert rel_error(grads_s[name], grads_l[name]) <= 1e-5, (name, rel_error(grads_s[name], grads_l[name]))
    assert len(patterns) > 1  # several coin patterns were compared, not one


def test_forced_stretches_run_fewer_rnn_calls(tiny, make_batch):
    """The engine is stored and taken: 'stretches' makes one RNN call per stretch of forced steps (lone steps
    are cell arithmetic), 'steps' one fused call per step; None (the default) takes stretches on CPU.
    Attention weights agree too."""
    x, mask = make_batch(tiny, [8, 6])
    models = {engine: quatrain.Autoencoder(tiny, engine=engine) for engine in ("stretches", "steps", None)}
    for model in models.values():
        model.load_state_dict(models["stretches"].state_dict())
    torch.manual_seed(1)
    known = [True, *(torch.rand(8) < 0.7).tolist()[1:]]  # the coins the forward will draw
    calls = {}
    weights = {}
    for engine, model in models.items():
        seen = []
        model.decoder.rnn.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0].shape[1]))
        torch.manual_seed(1)
        with torch.no_grad():  # a training decode on 'steps' runs its RNN through DecodeRNN (test_decode_rnn.py)
            weights[engine] = model(x, mask, teacher_forcing=0.7, need_weights=True).attention
        calls[engine] = seen
    assert calls["steps"] == [1] * 8
    assert 0 < len(calls["stretches"]) < 8 and sum(calls["stretches"]) == sum(known) < 8
    assert calls[None] == calls["stretches"]
    torch.testing.assert_close(weights["stretches"], weights["steps"], rtol=1e-5, atol=1e-6)


def test_unknown_engine_is_refused(tiny):
    with pytest.raises(quatrain.ConfigError, match="engine must be one of stretches, steps"):
        quatrain.Autoencoder(tiny, engine="fast")
