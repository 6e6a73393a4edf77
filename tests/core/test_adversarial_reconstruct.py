"""Issue 12, finding 11: reconstruction decodes windows in padded batches (same result) and reports progress."""

from __future__ import annotations

import pytest
import torch

import quatrain
from quatrain import reconstruct_lines
from quatrain.data import load_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("attention", ["encoder", "none"])
def test_batched_windows_reconstruct_like_one_at_a_time(poetry_files, attention):
    _, vectors = poetry_files
    embeddings = load_embeddings(vectors)
    config = quatrain.ModelConfig.preset("tiny", attention=attention)
    model = quatrain.Autoencoder(config).eval()
    text = [f"the rose {'of night ' * (i % 4)}and the sea" for i in range(30)]  # windows of several lengths
    one = reconstruct_lines(model, embeddings, text, batch_size=1)
    seen: list[tuple[int, int, str]] = []
    many = reconstruct_lines(model, embeddings, text, batch_size=7, progress=lambda *a: seen.append(a))
    assert len(one.windows) > 7
    assert [r.words for r in many.lines] == [r.words for r in one.lines]
    for a, b in zip(many.lines, one.lines, strict=True):
        assert a.cosine == pytest.approx(b.cosine, abs=1e-5)
    for a, b in zip(many.attention, one.attention, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    labels = [label for _, _, label in seen]
    assert labels[0] == "decoding windows" and labels[-1] == "searching nearest words"
    assert seen[-1][0] == seen[-1][1] and any(d == t == len(one.windows) for d, t, label in seen if "decoding" in label)


@pytest.mark.parametrize("backend", ["naive", "cached-decoder"])
def test_without_weights_the_engine_reconstructs_like_the_model(poetry_files, backend, monkeypatch):
    """Issue 11: reconstruct without --plot runs the engine's InferenceStep, with the same result."""
    _, vectors = poetry_files
    embeddings = load_embeddings(vectors)
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny"), backend=backend).eval()
    text = [f"the rose {'of night ' * (i % 4)}and the sea" for i in range(12)]
    runs: list[int] = []
    original = quatrain.InferenceStep.run
    monkeypatch.setattr(
        quatrain.InferenceStep, "run", lambda self, batch: runs.append(batch.rows) or original(self, batch)
    )
    plain = reconstruct_lines(model, embeddings, text, batch_size=5, weights=False)
    assert runs and sum(runs) == len(plain.windows), "every window went through InferenceStep"
    assert plain.attention == ()
    full = reconstruct_lines(model, embeddings, text, batch_size=5)
    assert len(full.attention) == len(full.windows)
    assert [r.words for r in plain.lines] == [r.words for r in full.lines]
    for a, b in zip(plain.lines, full.lines, strict=True):
        assert a.cosine == pytest.approx(b.cosine, abs=1e-5)


def test_tf32_off_cuda_is_refused_before_any_work(poetry_files):
    _, vectors = poetry_files
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny")).eval()
    with pytest.raises(quatrain.ConfigError, match="precision 'tf32': TF32 is the tensor-core float32"):
        reconstruct_lines(model, load_embeddings(vectors), ["the rose"], device="cpu", precision="tf32")


@pytest.mark.parametrize("weights", [False, True])
def test_bf16_reconstructs_under_autocast_near_the_float32_result(poetry_files, weights):
    """--precision bf16: both paths (the engine, and the model itself when the attention weights are asked
    for) decode under bf16 autocast, near the float32 reconstruction but not equal to it."""
    from quatrain._rnn import autocast_problem

    if (problem := autocast_problem("lstm", torch.device("cpu"))) is not None:
        pytest.skip(problem)
    _, vectors = poetry_files
    embeddings = load_embeddings(vectors)
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny")).eval()
    autocast_seen: list[bool] = []
    model.decoder.register_forward_hook(lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu")))
    text = [f"the rose {'of night ' * (i % 4)}and the sea" for i in range(6)]
    exact = reconstruct_lines(model, embeddings, text, weights=weights)
    assert autocast_seen and not any(autocast_seen)
    autocast_seen.clear()
    low = reconstruct_lines(model, embeddings, text, weights=weights, precision="bf16")
    assert autocast_seen and all(autocast_seen)
    cosines = [(a.cosine, b.cosine) for a, b in zip(low.lines, exact.lines, strict=True)]
    assert all(a == pytest.approx(b, abs=0.05) for a, b in cosines)
    assert any(a != b for a, b in cosines)
