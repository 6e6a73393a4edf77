"""deferred-kv: single-query steps whose K/V gradients come from one batched product after the last step."""

from __future__ import annotations

import copy

import pytest
import torch

import quatrain
from quatrain._compare import compare
from quatrain.testing import assert_conforms
from tests.conftest import random_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_conforms_to_naive(registry):
    report = assert_conforms("deferred-kv", registry=registry)
    ran = {c.name for c in report.checks}
    assert {"decode.sequential[lstm]", "decode.sequential[gru]", "decode.sequential[rnn]"} <= ran
    assert {c.dtype for c in report.checks} == {"float32", "bfloat16", "float16"}


def _steps(attention, memory, key_mask, queries):
    state = attention.prepare(memory, key_mask)
    return torch.stack([attention.step(q, state)[0] for q in queries.unbind(1)], dim=1)


def test_deferred_gradients_equal_autograd_of_the_plain_math(registry):
    """Many steps over one prepare, a row without keys and a row with one: outputs and every gradient equal
    cached-decoder's (ordinary autograd through SDPA), in float64; and K/V's share arrives only once."""
    torch.manual_seed(0)
    deferred = registry.backend("deferred-kv").cls(16, 4).double()
    plain = registry.backend("cached-decoder").cls(16, 4).double()
    plain.load_state_dict(deferred.state_dict())
    memory = torch.randn(3, 6, 16, dtype=torch.float64, requires_grad=True)
    key_mask = torch.tensor([[True] * 6, [False] * 6, [True] + [False] * 5])
    queries = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    results = []
    for attention in (deferred, plain):
        out = _steps(attention, memory, key_mask, queries)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, 16)).sum(), [memory, queries, *attention.parameters()])
        results.append((out, grads))
    (out_d, grads_d), (out_p, grads_p) = results
    torch.testing.assert_close(out_d, out_p)
    assert torch.equal(out_d[1], torch.zeros(7, 16))  # no keys: zero context
    for got, want in zip(grads_d, grads_p, strict=True):
        torch.testing.assert_close(got, want)
    assert grads_d[2].abs().sum() > 0  # w_q: the queries' gradient flowed


def test_each_step_backward_leaves_a_record_the_last_one_consumes(registry):
    attention = registry.backend("deferred-kv").cls(16, 4)
    memory = torch.randn(2, 5, 16, requires_grad=True)
    state = attention.prepare(memory, torch.ones(2, 5, dtype=torch.bool))
    out = sum(attention.step(torch.randn(2, 16), state)[0].sum() for _ in range(4))
    assert state.records == []
    out.backward()
    assert state.records == []  # all four recorded, then consumed by one product
    assert memory.grad is not None and memory.grad.abs().sum() > 0


def test_inference_builds_no_graph_and_weights_take_the_explicit_softmax(registry, tiny):
    model = quatrain.Autoencoder(tiny, "deferred-kv").eval()
    x, mask = random_batch(tiny, [6, 3])
    with torch.no_grad():
        out = model(x, mask).reconstruction
    assert not out.requires_grad
    reference = quatrain.Autoencoder(tiny, "cached-decoder").eval()
    reference.load_state_dict(model.state_dict())
    got = model(x, mask, need_weights=True)
    want = reference(x, mask, need_weights=True)
    torch.testing.assert_close(got.attention, want.attention)
    torch.testing.assert_close(got.reconstruction, out)


def test_steps_under_bf16_autocast_with_a_float32_memory_keep_to_the_rule(registry):
    """What a CUDA encoder gives under ``--precision bf16``: a float32 memory, so K and V come out of their
    projection in bfloat16 while the mask is float32. Many steps over one prepared batch, outputs and the
    gradients of the memory, the queries and every weight, against a float64 golden, by the rule."""
    torch.manual_seed(0)
    fast = registry.backend("deferred-kv").cls(16, 4)
    ref = registry.backend("cached-decoder").cls(16, 4)  # the same layout; plain autograd through SDPA
    ref.load_state_dict(fast.state_dict())
    memory, queries = torch.randn(3, 6, 16), torch.randn(3, 5, 16)
    key_mask = torch.tensor([[True] * 6, [True, True] + [False] * 4, [False] * 6])

    def run(attention, autocast):
        dtype = next(attention.parameters()).dtype
        m, q = memory.to(dtype).requires_grad_(), queries.to(dtype).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            state = attention.prepare(m, key_mask)
            out = torch.stack([attention.step(q[:, t], state)[0] for t in range(q.shape[1])], dim=1)
        grads = torch.autograd.grad((out.double() * torch.linspace(-1, 1, 16)).sum(), [m, q, *attention.parameters()])
        names = ["memory", "queries", *(n for n, _ in attention.named_parameters())]
        return {"output": out.detach().double(), **{f"grad {n}": g.double() for n, g in zip(names, grads, strict=True)}}

    golden = run(copy.deepcopy(ref).double(), autocast=False)
    result = compare(golden, run(ref, True), run(fast, True), dtype=torch.bfloat16)
    assert result.passed, result.format()
