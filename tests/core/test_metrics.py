"""Metrics on hand-computed cases: pads never count, nearest words against a known vocabulary."""

from __future__ import annotations

import math

import pytest
import torch

from quatrain._metrics import ReconstructionMetrics, nearest_words

VOCAB = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [2.0, -1.0]])


def test_cosine_is_a_token_weighted_mean_over_real_tokens():
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]])
    pred = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [-5.0, -5.0]], [[0.0, -1.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    m = ReconstructionMetrics()
    m.update(pred, target, mask, loss=0.5)
    r = m.result()
    assert r["tokens"] == 3
    assert r["cosine"] == pytest.approx((1.0 + 1 / math.sqrt(2) - 1.0) / 3)
    assert r["per_position_cosine"] == [pytest.approx(0.0), pytest.approx(1 / math.sqrt(2), abs=1e-6), None]
    assert r["loss"] == pytest.approx(0.5)
    assert r["word_top1"] is None


def test_batches_accumulate_by_token_not_by_batch():
    m = ReconstructionMetrics()
    one = torch.tensor([[[1.0, 0.0]]])
    m.update(one, one, torch.tensor([[True]]), loss=1.0)  # 1 token, cosine 1
    pred = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    m.update(pred, torch.tensor([[[1.0, 0.0]] * 3]), torch.ones(1, 3, dtype=torch.bool), loss=0.0)  # 3 tokens, cos 0
    r = m.result()
    assert r["cosine"] == pytest.approx(0.25) and r["loss"] == pytest.approx(0.25)


def test_nearest_words_rank_by_cosine_not_distance():
    pred = torch.tensor([[0.9, 0.1], [0.1, -0.2], [3.0, 0.1]])
    top = nearest_words(pred, VOCAB, k=3, chunk=2)
    # [3, 0.1] is nearer [2, -1] in distance (1.49 vs 2.0) but nearer [1, 0] in angle (cos .9994 vs .87)
    assert top[:, 0].tolist() == [0, 3, 0]
    assert top[1].tolist() == [3, 5, 0]  # cosines .894, .800, .447


def test_word_accuracy_top1_and_top5():
    m = ReconstructionMetrics(VOCAB)
    pred = torch.tensor([[[0.9, 0.1], [0.3, 0.5], [0.1, 1.0], [7.0, 7.0]]])
    ids = torch.tensor([[0, 0, 0, 2]])  # nearest; third (after [1,1], [0,1]); third (after [0,1], [1,1]); pad
    target = VOCAB[ids]
    mask = torch.tensor([[True, True, True, False]])
    m.update(pred, target, mask, ids)
    r = m.result()
    assert r["word_top1"] == pytest.approx(1 / 3)
    assert r["word_top5"] == pytest.approx(3 / 3)


def test_word_top5_misses_a_word_ranked_sixth():
    m = ReconstructionMetrics(VOCAB)
    pred = torch.tensor([[[1.0, 0.0]]])  # cosines: [1,0]=1, [2,-1]=.89, [1,1]=.71, [0,1]=0, [0,-1]=0, [-1,0]=-1
    ids = torch.tensor([[2]])
    m.update(pred, VOCAB[ids], torch.tensor([[True]]), ids)
    assert m.result()["word_top5"] == 0.0
