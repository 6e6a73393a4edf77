"""The train and inference steps: one implementation, eager and graphed, equal results; announced fallbacks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import quatrain
from quatrain._trainstep import GraphFallbackWarning, InferenceStep, TrainStep


def _batch(config, B=3, T=7, device="cpu"):
    x = torch.randn(B, T, config.embed_dim, device=device)
    lengths = torch.tensor([T] + [max(1, T - 2 - i) for i in range(B - 1)], device=device)
    mask = torch.arange(T, device=device)[None, :] < lengths[:, None]
    return x, mask


def _manual_step(model, optimizer, x, mask, teacher_forcing, clip):
    optimizer.zero_grad()
    out = model(x, mask, teacher_forcing=teacher_forcing)
    loss = quatrain.reconstruction_loss(out.reconstruction, x, mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
    optimizer.step()
    return loss.detach()


def test_train_step_is_forward_loss_backward_clip_adamw(tiny):
    """The step equals the textbook sequence written out by hand, parameter for parameter."""
    model = quatrain.Autoencoder(tiny)
    twin = copy.deepcopy(model)
    step = TrainStep(model, teacher_forcing=1.0, lr=1e-2, clip=0.5)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        x, mask = _batch(tiny)
        loss = step(x, mask)
        expected = _manual_step(twin, optimizer, x, mask, 1.0, 0.5)
        torch.testing.assert_close(loss, expected)
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_train_step_changes_the_parameters(tiny):
    model = quatrain.Autoencoder(tiny)
    before = [p.detach().clone() for p in model.parameters()]
    TrainStep(model, teacher_forcing=0.5)(*_batch(tiny))
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_cuda_graph_off_cuda_warns_and_runs_eagerly(tiny):
    model = quatrain.Autoencoder(tiny)
    twin = copy.deepcopy(model)
    graphed = TrainStep(model, cuda_graph=True, warmup=1)
    eager = TrainStep(twin)
    x, mask = _batch(tiny)
    with pytest.warns(GraphFallbackWarning, match="CUDA graphs need a CUDA device"):
        loss = graphed(x, mask)
    torch.testing.assert_close(loss, eager(x, mask))
    assert not graphed.graphed
    assert graphed.fallback_reason is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # announced once, not per step
        graphed(x, mask)


def test_inference_step_is_autoregressive_without_grad(tiny):
    model = quatrain.Autoencoder(tiny)
    x, mask = _batch(tiny)
    out = InferenceStep(model)(x, mask)
    assert not out.requires_grad
    assert not model.training
    torch.testing.assert_close(out, model(x, mask, teacher_forcing=0.0).reconstruction)


def test_warmup_must_be_positive(tiny):
    with pytest.raises(ValueError, match="warmup"):
        TrainStep(quatrain.Autoencoder(tiny), cuda_graph=True, warmup=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("teacher_forcing", [1.0, 0.0], ids=["parallel", "sequential"])
def test_cuda_graph_train_step_equals_eager(tiny, teacher_forcing):
    """Replaying the captured step gives the eager step's losses and parameters (dropout off)."""
    torch.backends.cudnn.deterministic = True
    model = quatrain.Autoencoder(tiny).cuda()
    twin = copy.deepcopy(model)
    graphed = TrainStep(model, teacher_forcing=teacher_forcing, cuda_graph=True, warmup=2)
    eager = TrainStep(twin, teacher_forcing=teacher_forcing)
    for i in range(6):
        x, mask = _batch(tiny, device="cuda")
        torch.testing.assert_close(graphed(x, mask), eager(x, mask), rtol=1e-4, atol=1e-5, msg=f"step {i}")
    assert graphed.graphed, graphed.fallback_reason
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # a batch of another shape runs eagerly, announced, and the graph still replays afterwards
    partial = _batch(tiny, B=2, device="cuda")
    with pytest.warns(GraphFallbackWarning, match="runs eagerly"):
        loss = graphed(*partial)
    torch.testing.assert_close(loss, eager(*partial), rtol=1e-4, atol=1e-5)
    x, mask = _batch(tiny, device="cuda")
    torch.testing.assert_close(graphed(x, mask), eager(x, mask), rtol=1e-4, atol=1e-5)
    assert graphed.graphed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_inference_equals_eager(tiny):
    model = quatrain.Autoencoder(tiny).cuda()
    step = InferenceStep(model, cuda_graph=True, warmup=1)
    for _ in range(3):
        x, mask = _batch(tiny, device="cuda")
        torch.testing.assert_close(step(x, mask), model(x, mask).reconstruction, rtol=1e-4, atol=1e-5)
    assert step.graphed, step.fallback_reason
