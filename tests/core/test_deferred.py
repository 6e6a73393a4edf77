"""Deferred weight gradients: a decode's per-step linear layers summed once give autograd's gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import quatrain
from quatrain import _model
from quatrain._compare import compare, without_kinks
from quatrain._deferred import DeferredLinears
from quatrain._rnn import autocast_problem


@pytest.mark.parametrize("bias", [True, False])
def test_deferred_linear_equals_f_linear_over_many_steps(bias):
    """A recurrence through two shared layers, float64: outputs and every gradient equal plain autograd's,
    and the weights' shares arrive once, after the last step."""
    torch.manual_seed(0)
    w1, w2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    b1, b2 = (torch.randn(6, dtype=torch.float64), torch.randn(5, dtype=torch.float64)) if bias else (None, None)
    x0 = torch.randn(3, 5, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (w1, w2, b1, b2, x0) if t is not None]
    results = []
    for linear in (F.linear, DeferredLinears()):
        x, outs = x0, []
        for _ in range(7):
            x = torch.tanh(linear(torch.relu(linear(x, w1, b1)), w2, b2))
            outs.append(x)
        out = torch.stack(outs)
        results.append((out, torch.autograd.grad((out * torch.linspace(-1, 1, 5)).sum(), leaves)))
    (plain, plain_grads), (deferred, deferred_grads) = results
    torch.testing.assert_close(deferred, plain)
    for got, want in zip(deferred_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    weight = torch.randn(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    linear = DeferredLinears()
    (grad,) = torch.autograd.grad(linear(linear(x, weight), weight).sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(F.linear(F.linear(x, weight), weight).sum(), x)[0])


def test_under_autocast_a_weight_is_cast_once_a_decode_not_at_every_step():
    """Autocast casts a parameter once per forward (its cache) but a deferred view at every use, and the
    steps' backward cast it again: the views are made from one cast, as plain autocast's uses share one."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                self.shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    weight, bias = torch.randn(8, 8).bfloat16().float(), torch.randn(8).bfloat16().float()
    x0 = torch.randn(4, 8).bfloat16().float()
    scale = torch.linspace(-1, 1, 8, dtype=torch.float64)

    def run(make, dtype, autocast):
        w, b = (t.to(dtype).requires_grad_() for t in (weight, bias))
        with Casts() as casts:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                linear, x, outs = make(), x0.to(dtype), []
                for _ in range(6):
                    x = torch.tanh(linear(x, w, b))
                    outs.append(x)
                out = torch.stack(outs).double()
            dw, db = torch.autograd.grad((out * scale).sum(), (w, b))
        return {"output": out.detach(), "grad weight": dw.double(), "grad bias": db.double()}, casts.shapes

    golden, _ = run(lambda: F.linear, torch.float64, autocast=False)
    plain, plain_casts = run(lambda: F.linear, torch.float32, autocast=True)
    deferred, deferred_casts = run(DeferredLinears, torch.float32, autocast=True)
    assert deferred_casts.count((8, 8)) == plain_casts.count((8, 8)) == 2  # to bfloat16 once, its gradient back once
    result = compare(golden, plain, deferred, dtype=torch.bfloat16, reference_name="plain autocast")
    assert result.passed, result.format()


@pytest.mark.parametrize("attention", ["encoder", "none"])
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_the_decoders_deferred_steps_equal_plain_autograd(tiny, make_batch, monkeypatch, attention, rnn):
    """The sequential decode (the 'steps' engine, teacher forcing 0.5, dropout off) in float64: the loss and
    every parameter's gradient equal those of the same decode with F.linear at every step."""
    config = tiny.evolve(attention=attention, rnn=rnn, dropout=0.0)
    model = quatrain.Autoencoder(config, None if attention == "none" else "cached-decoder", engine="steps").double()
    model.decoder.step_form = "steps"  # the RNN differentiated step by step, its input layer deferred too
    x, mask = make_batch(config, [6, 4, 1])
    x = x.double()
    calls = []

    class Counted(DeferredLinears):
        def __call__(self, x, weight, bias=None):
            calls.append(weight.shape)
            return super().__call__(x, weight, bias)

    results = []
    for deferred in (True, False):
        monkeypatch.setattr(_model, "DeferredLinears", Counted if deferred else lambda: F.linear)
        torch.manual_seed(3)  # the same coins
        out = model(x, mask, teacher_forcing=0.5).reconstruction
        loss = (out * torch.linspace(-1, 1, config.embed_dim, dtype=torch.float64)).square().sum()
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    (loss_d, grads_d), (loss_p, grads_p) = results
    torch.testing.assert_close(loss_d, loss_p)
    for (name, _), got, want in zip(model.named_parameters(), grads_d, grads_p, strict=True):
        torch.testing.assert_close(got, want, msg=name)
    # every step's three linear maps went through the deferral: the input layer, the integration MLP's first
    # layer and its last layer folded with the output layer (Decoder.fold)
    assert len(calls) == 6 * 3


def test_no_deferral_without_gradients_or_for_a_wrapped_step(tiny, make_batch, made_deferrals, registry):
    """Inference builds none; nor does a decode whose step a backend wrapped (it runs the step as it wants),
    nor a replayed one (core/_replay.py: no step is differentiated); a decode differentiated step by step
    builds one."""
    base = registry.backend("cached-decoder").cls

    class Wrapping(base):
        def wrap_step(self, step):
            return lambda *args: step(*args)

    x, mask = make_batch(tiny, [5, 3])
    plain = quatrain.Autoencoder(tiny, "cached-decoder", engine="steps")
    with torch.no_grad():
        plain(x, mask, teacher_forcing=0.5)
    assert made_deferrals == []
    quatrain.Autoencoder(tiny, Wrapping, engine="steps")(x, mask, teacher_forcing=0.5).reconstruction.sum().backward()
    assert made_deferrals == []
    plain(x, mask, teacher_forcing=0.5).reconstruction.sum().backward()
    assert made_deferrals == []
    plain.decoder.step_form = "steps"
    plain(x, mask, teacher_forcing=0.5).reconstruction.sum().backward()
    assert len(made_deferrals) == 1


@pytest.mark.parametrize("engine", ["steps", "stretches"])
@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_deferred_steps_under_bf16_autocast_keep_to_the_rule(tiny, make_batch, monkeypatch, engine, attention):
    """Under bf16 autocast (what ``--precision bf16`` trains with) a step's input is float32 and its output
    gradient bfloat16; the deferred products run in bfloat16 as autocast's own backward does. Loss and every
    gradient, sequential decode at teacher forcing 0.5: the deferred run's error against a float64 golden
    stays within the rule's bound of the plain run's own (quatrain._compare)."""
    config = tiny.evolve(attention=attention, dropout=0.0)
    if (problem := autocast_problem(config.rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    backend = None if attention == "none" else "deferred-kv"
    torch.manual_seed(0)
    model = without_kinks(quatrain.Autoencoder(config, backend, engine=engine))
    model.decoder.step_form = "steps"  # the replay's own autocast test: tests/core/test_replay.py
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16())  # weights bfloat16 holds exactly: the golden starts from the same values
    x, mask = make_batch(config, [6, 4, 1])
    x = x.bfloat16().float()
    scale = torch.linspace(-1, 1, config.embed_dim, dtype=torch.float64)

    def run(m, deferred, autocast):
        monkeypatch.setattr(_model, "DeferredLinears", DeferredLinears if deferred else lambda: F.linear)
        dtype = next(m.parameters()).dtype
        torch.manual_seed(3)  # the same coins
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = m(x.to(dtype), mask, teacher_forcing=0.5).reconstruction
        loss = (out.double() * scale).square().sum()
        grads = torch.autograd.grad(loss, list(m.parameters()))
        named = {f"grad {n}": g.double() for (n, _), g in zip(m.named_parameters(), grads, strict=True)}
        return {"output": out.detach().double(), **named}

    golden = run(copy.deepcopy(model).double(), deferred=False, autocast=False)
    reference = run(model, deferred=False, autocast=True)
    candidate = run(model, deferred=True, autocast=True)
    result = compare(golden, reference, candidate, dtype=torch.bfloat16, gradient_kind="model gradient")
    assert result.passed, result.format()
