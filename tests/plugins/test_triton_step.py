"""triton-step: deferred-kv whose single-query steps run as Triton kernels.

The kernels' math is checked wherever Triton is installed: on CUDA natively, and on CPU under Triton's
interpreter (``TRITON_INTERPRET=1``, in a fresh interpreter since Triton reads it at import). Without
Triton only the matmul path (deferred-kv's) can run here, and the last test checks that it is the one taken.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from quatrain.testing import assert_conforms

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

INTERPRETED = """
    import json
    import torch
    from quatrain.registry import load_registry
    from quatrain.testing import check_backend

    torch.set_num_threads(1)
    registry = load_registry()
    report = check_backend("triton-step", devices=("cpu",), registry=registry)
    # Gradients of many steps over one prepared batch, a row without keys and a row with one key, against
    # cached-decoder's ordinary autograd through SDPA.
    torch.manual_seed(1)
    fast = registry.backend("triton-step").cls(24, 3)
    plain = registry.backend("cached-decoder").cls(24, 3)
    plain.load_state_dict(fast.state_dict())
    memory = torch.randn(3, 9, 24, requires_grad=True)
    key_mask = torch.tensor([[True] * 9, [False] * 9, [True] + [False] * 8])
    queries = torch.randn(3, 5, 24, requires_grad=True)
    errors, paths = [], []
    results = []
    for attention in (fast, plain):
        state = attention.prepare(memory, key_mask)
        paths.append((getattr(attention, "step_path", None), type(getattr(state, "linear", None)).__name__))
        out = torch.stack([attention.step(q, state)[0] for q in queries.unbind(1)], dim=1)
        inputs = [memory, queries, *attention.parameters()]
        results.append([out, *torch.autograd.grad((out * torch.linspace(-1, 1, 24)).sum(), inputs)])
    for got, want in zip(*results):
        errors.append(float((got - want).abs().max() / want.abs().max().clamp(min=1e-30)))
    # Queries without gradients and w_q frozen: K and V still get theirs through the kernel's backward.
    for p in (*fast.w_q.parameters(), *plain.w_q.parameters()):
        p.requires_grad_(False)
    frozen = []
    for attention in (fast, plain):
        state = attention.prepare(memory, key_mask)
        out = torch.stack([attention.step(q, state)[0] for q in queries.detach().unbind(1)], dim=1)
        trained = [memory, *(p for p in attention.parameters() if p.requires_grad)]
        frozen.append(torch.autograd.grad(out.square().sum(), trained))
    for got, want in zip(*frozen):
        errors.append(float((got - want).abs().max() / want.abs().max().clamp(min=1e-30)))
    # The folded integration layer's first map, over many steps: the kernel path (one stacked product, the
    # context half added in place) against the default (concatenation, then the linear map), with the
    # weight's gradient deferred as the decoder does and summed at every step.
    from quatrain import AttentionBackend
    from quatrain._deferred import DeferredLinears

    torch.manual_seed(2)
    weight = torch.randn(24, 48, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    scale = torch.linspace(-1, 1, 24)
    for make in (DeferredLinears, lambda: torch.nn.functional.linear):
        layer = []
        for attention, integrated in ((fast, type(fast).step_integrated), (plain, AttentionBackend.step_integrated)):
            state = attention.prepare(memory, key_mask)
            linear = make()
            out = torch.stack([integrated(attention, q, state, weight, bias, linear) for q in queries.unbind(1)], 1)
            inputs = [memory, queries, weight, bias, attention.w_kv.weight]  # w_q frozen above; w_o not read
            layer.append([out, *torch.autograd.grad((out * scale).sum(), inputs)])
        for got, want in zip(*layer):
            errors.append(float((got - want).abs().max() / want.abs().max().clamp(min=1e-30)))
    dtypes = sorted({c.dtype for c in report.checks})
    empty_row = float(results[0][0][1].abs().max())
    print(json.dumps({"passed": report.passed, "text": report.format(), "dtypes": dtypes, "path": paths[0],
                      "errors": errors, "empty_row": empty_row}))
"""


@needs_triton
@pytest.mark.slow
def test_kernels_conform_under_the_interpreter():
    """The conformance kit (every dtype, RNN kind, masks, outputs and gradients) and a many-step gradient check,
    with the kernels run by Triton's interpreter on CPU."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERPRETED)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["path"] == ["triton", "DeferredLinears"]  # the kernels ran, with w_q's weight gradient deferred
    assert result["passed"], result["text"]
    assert result["dtypes"] == ["bfloat16", "float16", "float32"]
    assert max(result["errors"]) < 1e-5, result["errors"]
    assert result["empty_row"] == 0.0


@needs_triton
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernels_conform_on_cuda(registry):
    report = assert_conforms("triton-step", devices=("cuda",), registry=registry)
    assert {c.dtype for c in report.checks} == {"float32", "bfloat16", "float16"}
    attention = registry.backend("triton-step").cls(512, 4).cuda()
    attention.prepare(torch.randn(2, 50, 512, device="cuda"), torch.ones(2, 50, dtype=torch.bool, device="cuda"))
    assert attention.step_path == "triton"


@pytest.mark.skipif(
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1", reason="the kernels would run"
)
def test_without_the_kernels_a_step_is_deferred_kvs(registry):
    """On CPU (no interpreter) every step takes deferred-kv's matmul path: the same numbers, bit for bit."""
    torch.manual_seed(0)
    fast = registry.backend("triton-step").cls(16, 4)
    plain = registry.backend("deferred-kv").cls(16, 4)
    plain.load_state_dict(fast.state_dict())
    memory, key_mask = torch.randn(2, 5, 16), torch.tensor([[True] * 5, [True, True] + [False] * 3])
    query = torch.randn(2, 16)
    weight, bias = torch.randn(16, 32), torch.randn(16)
    outs, layers = [], []
    for attention in (fast, plain):
        state = attention.prepare(memory, key_mask)
        outs.append(attention.step(query, state)[0])
        layers.append(attention.step_integrated(query, state, weight, bias))
    assert fast.step_path == "matmul"
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(layers[0], layers[1])


def autocast_comparison(device: str, seed: int = 0):
    """triton-step's train step under bf16 autocast (``--precision bf16``: float32 weights and queries,
    bfloat16 products) against deferred-kv's, both against a float64 golden, by the comparison rule."""
    import copy

    import quatrain
    from quatrain._compare import compare, without_kinks

    config = quatrain.ModelConfig.preset("tiny", dropout=0.0)
    torch.manual_seed(seed)
    fast = without_kinks(quatrain.Autoencoder(config, "triton-step", engine="steps")).to(device)
    with torch.no_grad():
        for p in fast.parameters():
            p.copy_(p.bfloat16())
    plain = copy.deepcopy(fast).to_backend("deferred-kv")  # to_backend converts in place
    x = torch.randn(3, 7, config.embed_dim, device=device).bfloat16().float()
    mask = torch.arange(7, device=device)[None, :] < torch.tensor([7, 4, 1], device=device)[:, None]
    scale = torch.linspace(-1, 1, config.embed_dim, dtype=torch.float64, device=device)

    def run(model, autocast):
        dtype = next(model.parameters()).dtype
        torch.manual_seed(3)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            out = model(x.to(dtype), mask, teacher_forcing=0.5).reconstruction
        loss = (out.double() * scale).square().sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return {
            "output": out.detach().double(),
            **{f"grad {n}": g.double() for (n, _), g in zip(model.named_parameters(), grads, strict=True)},
        }

    golden = run(copy.deepcopy(plain).double(), autocast=False)
    result = compare(golden, run(plain, True), run(fast, True), dtype=torch.bfloat16, gradient_kind="model gradient")
    return result, fast.decoder.attention.step_path


@needs_triton
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_bf16_autocast_train_step_keeps_to_the_rule_on_cuda(registry):
    result, path = autocast_comparison("cuda")
    assert path == "triton"
    assert result.passed, result.format()
