"""Evaluation: the word-rank count against the top-k search, the split's device-resident batches against the
engine's Batcher, and ``evaluate``'s sums against the plain per-batch metrics, whatever the batch size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import quatrain
from quatrain._batches import Batcher, SplitBatches, balanced_batch
from quatrain._evaluate import evaluate
from quatrain._metrics import NeighbourRanks, ReconstructionMetrics, nearest_words, word_ranks
from quatrain._trainstep import InferenceStep
from quatrain.data import build_data, load_corpus, load_embeddings


@pytest.fixture(name="data", scope="module")
def _data(shared_poetry_files):
    corpus, vectors = shared_poetry_files
    return build_data(load_corpus(corpus), load_embeddings(vectors), max_len=12, seed=0)


@pytest.fixture(name="model", scope="module")
def _model():
    torch.manual_seed(0)
    return quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny"))


@pytest.mark.parametrize("count", [True, False], ids=["count", "top-k"])
@pytest.mark.parametrize("budget", [7, 300, 2**25])
def test_word_ranks_agree_with_the_top_k_search(budget, count):
    """Top-1 is rank 0 and top-5 rank < 5, with the vocabulary cut into blocks of any size, counted or kept
    as the best scores; the rank is the float64 count of words with a higher cosine, capped."""
    torch.manual_seed(1)
    vocab = torch.randn(300, 8)
    truth = torch.randint(0, 300, (90,))
    pred = vocab[truth] + torch.linspace(0.0, 1.5, 90)[:, None] * torch.randn(90, 8)  # from exact to far off
    ranks = word_ranks(pred, F.normalize(vocab, dim=-1), truth, budget=budget, count=count, cap=7)
    top = nearest_words(pred, vocab, k=5)
    assert torch.equal(ranks == 0, top[:, 0] == truth)
    assert torch.equal(ranks < 5, (top == truth[:, None]).any(dim=1))
    cos = F.normalize(pred.double(), dim=-1) @ F.normalize(vocab.double(), dim=-1).T
    assert torch.equal(ranks, (cos > cos.gather(1, truth[:, None])).sum(dim=1).clamp(max=7))
    assert 0 < int((ranks == 0).sum()) < int((ranks < 7).sum()) < 90  # the cases are mixed


@pytest.mark.parametrize("count", [True, False], ids=["count", "top-k"])
def test_a_word_tied_with_the_truth_does_not_count_against_it(count):
    vocab = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # words 0 and 1 point the same way
    pred, truth = torch.tensor([[3.0, 0.1], [3.0, 0.1]]), torch.tensor([1, 2])
    assert word_ranks(pred, F.normalize(vocab, dim=-1), truth, count=count).tolist() == [0, 2]


@pytest.mark.parametrize("budget", [40, 2**25])
@pytest.mark.parametrize("neighbours", [1, 6, 40, 299, 1000])
def test_neighbour_ranks_equal_the_whole_vocabulary_search_wherever_they_vouch_for_a_row(neighbours, budget):
    """The rank within the true word's neighbour list is the float64 whole-vocabulary rank on every covered
    row; close predictions are covered, far ones are not, and with every word listed every row is."""
    torch.manual_seed(2)
    vocab = torch.randn(300, 8)
    vocab[7] = 2 * vocab[3]  # two words pointing the same way: a tie never counts against the truth
    truth = torch.randint(0, 300, (400,))
    truth[:6] = torch.tensor([3, 7, 3, 7, 3, 7])
    pred = vocab[truth] + torch.linspace(0.0, 1.5, 400)[:, None] * torch.randn(400, 8)  # exact to far off
    unit = F.normalize(vocab, dim=-1)
    ranker = NeighbourRanks(unit, truth[:300], neighbours=neighbours)  # the last 100 rows' words may be unlisted
    ranks, covered = ranker(pred, truth, cap=7, budget=budget)
    cos = F.normalize(pred.double(), dim=-1) @ F.normalize(vocab.double(), dim=-1).T
    exact = (cos > cos.gather(1, truth[:, None])).sum(dim=1).clamp(max=7)
    assert torch.equal(ranks[covered], exact[covered])
    full = word_ranks(pred, unit, truth, cap=7)  # (it may count the twin of rows 0-5, rounded a hair above)
    assert torch.equal(ranks[6:][covered[6:]], full[6:][covered[6:]])
    listed = torch.isin(truth, truth[:300])
    assert not covered[~listed].any()  # a word without a list is never vouched for
    if neighbours >= 299:
        assert covered[listed].all()
    else:
        assert covered[6:20].all() and int(covered[-100:].sum()) < 50  # close predictions are, far ones mostly not
        # the twin direction is the one neighbour: a list of one cannot vouch for anything beyond it
        assert covered[:6].all() if neighbours > 1 else not covered[:6].any()
    assert (ranks[:6][covered[:6]] == 0).all()  # the twin ties with the truth and does not outrank it
    if neighbours == 6:
        assert int((exact[covered] > 0).sum()) > 0  # some covered rows have better words than the truth


@pytest.mark.parametrize("neighbours", [0, 2, 6, 64])
def test_evaluate_searches_only_the_rows_its_lists_do_not_cover(data, neighbours):
    """Whatever the lists' length, the metrics are the whole-vocabulary search's; an untrained model is far
    from its words and needs the whole search, one that gives back its input (nearly) exactly does not."""
    from quatrain._evaluate import SplitEvaluator

    torch.manual_seed(0)
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny"))
    V = data.embeddings.vectors.shape[0]
    found = SplitEvaluator(model, data, "val", batch_size=4, neighbours=neighbours)()
    plain = _reference(model, data, "val")
    assert (found["word_top1"], found["word_top5"]) == (plain["word_top1"], plain["word_top5"])
    if neighbours >= V - 1:
        assert found["word_full_search"] == 0  # every word is listed
    else:
        assert found["word_full_search"] > 0

    def near_copy(x, mask, teacher_forcing=0.0):
        return type("Out", (), {"reconstruction": x + 1e-3 * torch.sin(3 * x)})()

    model.forward = near_copy  # type: ignore[method-assign]
    found = SplitEvaluator(model, data, "val", batch_size=4, neighbours=neighbours)()
    assert found["word_top1"] == 1.0
    assert found["word_full_search"] == (found["word_tokens"] if neighbours == 0 else 0)


@pytest.mark.parametrize(
    ("count", "batch", "multiple", "size"),
    [(326, 256, 8, 168), (326, 64, 8, 56), (326, 256, 1, 163), (5, 256, 8, 8), (10, 4, 8, 4), (0, 64, 8, 8)],
)
def test_a_split_is_cut_into_even_batches(count, batch, multiple, size):
    assert balanced_batch(count, batch, multiple) == size


@pytest.mark.parametrize("static", [True, False], ids=["static", "trimmed"])
def test_split_batches_equal_the_engine_batcher(data, static):
    windows = data.windows["train"]
    table = torch.from_numpy(data.embeddings.vectors)
    rows = torch.arange(len(windows))[1::2]
    split = SplitBatches(windows.ids, windows.lengths, table, batch_size=4, static=static, rows=rows)
    batcher = Batcher(windows.ids, windows.lengths, table, batch_size=4, static=static)
    assert len(split) == -(-len(rows) // 4) >= 2
    for i in range(len(split)):
        a, b = split[i], batcher(rows[4 * i : 4 * i + 4])
        assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask) and torch.equal(a.ids.long(), b.ids)
        assert (a.tokens, a.rows) == (b.tokens, b.rows)


def _reference(model, data, split):
    """The split's metrics from one eager forward over all of it, summed by ReconstructionMetrics."""
    windows = data.windows[split]
    table = torch.from_numpy(data.embeddings.vectors)
    x, mask = table[windows.ids], windows.mask
    model.eval()
    with torch.no_grad():
        pred = model(x, mask, teacher_forcing=0.0).reconstruction
    metrics = ReconstructionMetrics(table)
    metrics.update(pred, x, mask, windows.ids, loss=float(quatrain.reconstruction_loss(pred, x, mask)))
    return metrics.result()


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_evaluate_equals_the_plain_metrics_at_any_batch_size(model, data, batch_size):
    expected = _reference(model, data, "train")
    found = evaluate(model, data, "train", batch_size=batch_size)
    assert found["tokens"] == expected["tokens"] == found["word_tokens"]
    for key in ("loss", "cosine"):
        assert found[key] == pytest.approx(expected[key], rel=1e-5)
    assert (found["word_top1"], found["word_top5"]) == (expected["word_top1"], expected["word_top5"])
    positions = expected["per_position_cosine"]
    while positions and positions[-1] is None:  # evaluate lists the positions some window reaches
        positions = positions[:-1]
    assert found["per_position_cosine"] == pytest.approx(positions, abs=2e-6)
    assert found["seconds"] > 0 and found["setup_seconds"] > 0  # the word search's neighbour lists
    assert evaluate(model, data, "train", batch_size=batch_size, words=False)["setup_seconds"] == 0.0  # no capture


def test_a_word_sample_measures_that_many_tokens(model, data):
    found = evaluate(model, data, "val", batch_size=3, word_sample=10)
    assert found["word_tokens"] == 10 and 0.0 <= found["word_top1"] <= found["word_top5"] <= 1.0
    assert evaluate(model, data, "val", batch_size=5, word_sample=10)["word_top5"] == found["word_top5"]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_graphed_evaluation_equals_the_eager_one(data):
    """On CUDA the split is decoded by replays of one captured graph (captured before the clock starts) and
    the metrics equal an eager InferenceStep's."""
    torch.manual_seed(0)
    model = quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny")).cuda()
    graphed = evaluate(model, data, "val", batch_size=4)
    eager = evaluate(model, data, "val", batch_size=4, step=InferenceStep(model, cuda_graph=False))
    capture = evaluate(model, data, "val", batch_size=4, words=False)["setup_seconds"]
    no_capture = evaluate(model, data, "val", batch_size=4, words=False, step=InferenceStep(model, cuda_graph=False))
    assert capture > 0 and no_capture["setup_seconds"] == 0.0  # (with words, setup adds the neighbour lists)
    for key in ("loss", "cosine", "word_top1", "word_top5"):
        assert graphed[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
    assert graphed["tokens"] == eager["tokens"] == _reference(model.cpu(), data, "val")["tokens"]


def test_an_evaluator_is_set_up_once_and_measures_again(model, data):
    """The trainer's validation: one SplitEvaluator, called each epoch, equal to a fresh evaluate."""
    from quatrain._evaluate import SplitEvaluator

    evaluator = SplitEvaluator(model, data, "train", batch_size=5, word_sample=40)
    first, again = evaluator(), evaluator()
    fresh = evaluate(model, data, "train", batch_size=5, word_sample=40)
    timing = ("setup_seconds", "seconds", "seq_per_s")
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in again.items() if k not in timing}
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in fresh.items() if k not in timing}


def test_the_trainer_builds_its_validator_once(poetry_files, monkeypatch, tmp_path):
    import quatrain._train as trainer
    from quatrain._recipe import TrainConfig

    built = []
    real = trainer.SplitEvaluator.__init__
    counted = lambda self, *a, **k: built.append(1) or real(self, *a, **k)  # noqa: E731
    monkeypatch.setattr(trainer.SplitEvaluator, "__init__", counted)
    corpus, vectors = poetry_files
    config = TrainConfig(model=quatrain.ModelConfig.preset("tiny"), corpus=str(corpus), embeddings=str(vectors),
                         epochs=3, batch_size=8, device="cpu", patience=0)  # fmt: skip
    result = trainer.train(config, tmp_path / "m.safetensors")
    assert len(result.history) == 3 and built == [1]
