"""The train and inference steps: one implementation, eager and graphed, equal results; announced fallbacks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import quatrain
from quatrain._batches import Batcher, bucket_lengths
from quatrain._trainstep import GraphFallbackWarning, InferenceStep, TrainStep, repeat_epoch, run_epoch


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


def _windows(config, n=7, seed=0):
    """Host windows (ids, lengths) of at most max_len tokens, and an embedding table."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (n, config.max_len), generator=g)
    lengths = torch.randint(1, config.max_len - 2, (n,), generator=g)
    return ids, lengths, torch.randn(40, config.embed_dim, generator=g)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("teacher_forcing", [1.0, 0.0], ids=["parallel", "sequential"])
def test_padded_last_batch_trains_like_the_unpadded_one(tiny, teacher_forcing):
    """Empty rows (mask all False) and pads to max_len change neither the loss nor any gradient."""
    ids, lengths, table = _windows(tiny)
    rows = torch.tensor([4, 0, 2])  # the last, partial batch of an epoch with batch size 5
    model = quatrain.Autoencoder(tiny)
    twin = copy.deepcopy(model)
    trimmed = Batcher(ids, lengths, table, batch_size=5, static=False)(rows)
    padded = Batcher(ids, lengths, table, batch_size=5, static=True)(rows)
    assert tuple(trimmed.mask.shape) == (3, int(lengths[rows].max()))
    assert tuple(padded.mask.shape) == (5, tiny.max_len) and not padded.mask[3:].any()
    assert padded.tokens == trimmed.tokens == int(lengths[rows].sum()) and padded.rows == 3
    a = TrainStep(model, teacher_forcing=teacher_forcing, clip=None)
    b = TrainStep(twin, teacher_forcing=teacher_forcing, clip=None)
    torch.testing.assert_close(a.run(padded), b.run(trimmed))
    T = trimmed.mask.shape[1]
    torch.testing.assert_close(a.output[:3, :T][trimmed.mask], b.output[trimmed.mask])
    expected = _grads(twin)
    got = _grads(model)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.isfinite(got[name]).all(), name
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    assert a.totals() == pytest.approx(b.totals())


def test_buckets_pad_to_the_shortest_captured_length_that_fits(tiny):
    assert bucket_lengths(12, 1) == (12,)
    assert bucket_lengths(12, 3) == (4, 8, 12)
    ids, lengths, table = _windows(tiny)
    lengths[:] = 5
    batch = Batcher(ids, lengths, table, batch_size=4, static=True, buckets=bucket_lengths(12, 3))(torch.arange(3))
    assert tuple(batch.mask.shape) == (4, 8)


def test_the_epoch_loop_reads_the_device_only_for_progress_and_at_the_end(tiny, monkeypatch):
    """No per-step read: the loss sums stay in the step; progress reads them at most every REPORT_EVERY_S."""
    import quatrain._trainstep as engine

    ids, lengths, table = _windows(tiny, n=24)
    batcher = Batcher(ids, lengths, table, batch_size=3, static=False)
    batches = [batcher(torch.arange(i, i + 3)) for i in range(0, 24, 3)]
    step = TrainStep(quatrain.Autoencoder(tiny))
    reads = []
    real = TrainStep.totals
    monkeypatch.setattr(TrainStep, "totals", lambda self: reads.append(1) or real(self))
    seen = []
    monkeypatch.setattr(engine, "REPORT_EVERY_S", 3600.0)
    done = run_epoch(step, batches, total=len(batches), on_batch=lambda *args: seen.append(args))
    assert len(reads) == 2, "one read for the last progress line, one for the epoch's totals"
    assert [args[3] is None for args in seen] == [True] * 7 + [False]
    assert done.steps == 8 and done.rows == 24 and done.tokens == int(lengths.sum())
    reads.clear()
    monkeypatch.setattr(engine, "REPORT_EVERY_S", 0.0)
    run_epoch(step, batches, total=len(batches), on_batch=lambda *args: None)
    assert len(reads) == 9, "REPORT_EVERY_S bounds the reads"


def test_the_loop_sets_the_learning_rate_of_every_step(tiny):
    ids, lengths, table = _windows(tiny, n=6)
    batcher = Batcher(ids, lengths, table, batch_size=2, static=False)
    step = TrainStep(quatrain.Autoencoder(tiny), lr=1.0)
    rates = []
    run_epoch(step, (batcher(torch.arange(i, i + 2)) for i in range(0, 6, 2)), total=3, first_step=10,
              lr_at=lambda n: rates.append(n) or 0.5)  # fmt: skip
    assert rates == [10, 11, 12] and step.optimizer.param_groups[0]["lr"] == 0.5


def test_a_new_teacher_forcing_rate_drops_the_recorded_graphs(tiny):
    step = TrainStep(quatrain.Autoencoder(tiny), teacher_forcing=1.0)
    step._runner.seen[("shape",)] = 3
    step.set_teacher_forcing(1.0)
    assert step._runner.seen
    step.set_teacher_forcing(0.5)
    assert not step._runner.seen and step.teacher_forcing == 0.5


def test_the_bench_epoch_is_the_trainer_loop_on_the_bench_batch(tiny):
    """repeat_epoch cuts the bench's own batch through the trainer's Batcher: same steps as calling the step."""
    x, mask = _batch(tiny, B=4, T=9)
    model = quatrain.Autoencoder(tiny)
    twin = copy.deepcopy(model)
    done = repeat_epoch(TrainStep(model, lr=1e-2), x, mask, steps=3)
    step = TrainStep(twin, lr=1e-2)
    losses = [step(x, mask) for _ in range(3)]
    assert done.steps == 3 and done.rows == 12 and done.tokens == 3 * int(mask.sum())
    assert done.loss_sum == pytest.approx(float(sum(losses)) * int(mask.sum()), rel=1e-6)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5, 0.0], ids=["parallel", "sampled", "sequential"])
def test_graphed_train_step_with_a_padded_last_batch_equals_the_eager_step(tiny, teacher_forcing):
    """Replays of the captured step give the eager step's outputs, losses and every gradient (dropout off)."""
    torch.backends.cudnn.deterministic = True
    ids, lengths, table = _windows(tiny, n=30)
    model = quatrain.Autoencoder(tiny).cuda()
    twin = copy.deepcopy(model)
    batcher = Batcher(ids, lengths, table.cuda(), batch_size=4, static=True)
    graphed = TrainStep(model, teacher_forcing=teacher_forcing, cuda_graph=True, warmup=1)
    eager = TrainStep(twin, teacher_forcing=teacher_forcing)
    for i in range(4):  # eager warm-up, capture, then replays; every batch the padded last one (3 of 4 rows)
        batch = batcher(torch.arange(3 * i, 3 * i + 3))
        assert tuple(batch.mask.shape) == (4, tiny.max_len)
        state = torch.cuda.get_rng_state()
        loss = graphed.run(batch)
        torch.cuda.set_rng_state(state)  # the same coins for both
        torch.testing.assert_close(loss, eager.run(batch), rtol=1e-4, atol=1e-5, msg=f"loss, step {i}")
        torch.testing.assert_close(graphed.output, eager.output, rtol=1e-4, atol=1e-5, msg=f"output, step {i}")
        expected = _grads(twin)
        for name, grad in _grads(model).items():
            torch.testing.assert_close(grad, expected[name], rtol=1e-3, atol=1e-5, msg=f"{name}, step {i}")
    assert graphed.graphed, graphed.fallback_reason
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.tensor(graphed.totals()), torch.tensor(eager.totals()), rtol=1e-5, atol=0)


@pytest.mark.gpu
@cuda
def test_graphed_scheduled_sampling_draws_fresh_coins_per_replay(tiny):
    torch.manual_seed(0)
    ids, lengths, table = _windows(tiny, n=8)
    step = TrainStep(quatrain.Autoencoder(tiny).cuda(), teacher_forcing=0.5, cuda_graph=True, warmup=1, lr=0.0)
    batch = Batcher(ids, lengths, table.cuda(), batch_size=8, static=True)(torch.arange(8))
    outputs = [(step.run(batch), step.output.clone())[1] for _ in range(6)]
    assert step.graphed
    assert any(not torch.equal(outputs[2], o) for o in outputs[3:]), "every replay gave the same coins"


@pytest.mark.gpu
@cuda
def test_the_graphed_epoch_has_no_per_step_host_sync(tiny):
    """CUDA's sync debug mode counts the synchronising calls: as many for 12 steps as for 4."""
    ids, lengths, table = _windows(tiny, n=48)
    step = TrainStep(quatrain.Autoencoder(tiny).cuda(), cuda_graph=True, warmup=1)
    batcher = Batcher(ids, lengths, table.cuda(), batch_size=4, static=True)
    run_epoch(step, (batcher(torch.arange(i, i + 4)) for i in range(0, 12, 4)), total=3)  # warm-up, capture

    def syncs(n):
        batches = [batcher(torch.arange(i % 44, i % 44 + 4)) for i in range(n)]
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run_epoch(step, batches, total=n, lr_at=lambda k: 1e-3)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(4)  # whatever a first timed call pays once (after capture) is paid here, not counted below
    assert syncs(12) == syncs(4)
    assert step.graphed


@pytest.mark.gpu
@cuda
def test_cuda_graph_inference_equals_eager(tiny):
    model = quatrain.Autoencoder(tiny).cuda()
    step = InferenceStep(model, cuda_graph=True, warmup=1)
    for _ in range(3):
        x, mask = _batch(tiny, device="cuda")
        torch.testing.assert_close(step(x, mask), model(x, mask).reconstruction, rtol=1e-4, atol=1e-5)
    assert step.graphed, step.fallback_reason


@pytest.mark.gpu
@cuda
def test_a_failed_capture_falls_back_to_eager_steps_that_still_draw_random_numbers():
    """A body that cannot be captured (a host sync) runs eagerly, announced; its dropout, and every random op
    after it, work (a failed capture leaves the generator marked as capturing unless the engine releases it)."""
    from quatrain._graphs import Graphed

    def body(x):
        y = torch.nn.functional.dropout(x, 0.5, training=True)
        return y * float(x.sum() > 0)  # a read on the host: fine eagerly, not while capturing

    runner = Graphed(body, cuda_graph=True, warmup=1, what="test step")
    x = torch.ones(64, device="cuda")
    runner(x)  # warm-up on the side stream
    with pytest.warns(GraphFallbackWarning, match="capture failed"):
        y = runner(x)  # capture fails: the same call runs eagerly
    assert not runner.graphs and runner.fallback_reason is not None
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 0 < int((y == 0).sum()) < 64  # dropout ran
    assert torch.rand(3, device="cuda").shape == (3,)
    follow = Graphed(lambda t: torch.nn.functional.dropout(t, 0.5, training=True), cuda_graph=True, warmup=1, what="x")
    for _ in range(3):  # a later capture on the same device still works, and replays draw fresh masks
        follow(x)
    assert follow.graphs and not torch.equal(follow(x), follow(x))


@pytest.mark.gpu
@cuda
def test_an_engine_dropped_before_a_capture_is_not_collected_in_the_middle_of_it():
    """A dropped engine is a reference cycle holding its CUDA graphs, freed whenever Python's cycle collector
    next runs, which can be at any allocation. Freed in the middle of another capture, it spoils that capture
    (as it did, now and then, in the GPU runs); the engine holds the collector off while it captures, and
    the collector is back on afterwards, after a failed capture too."""
    import gc

    from quatrain._graphs import Graphed

    class Engine:  # a step engine dropped with its graph: garbage only the cycle collector frees
        def __init__(self) -> None:
            self.me = self
            self.runner = Graphed(lambda t: t + 1, cuda_graph=True, warmup=1, what="old step")

    x = torch.ones(64, device="cuda")
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(10**9)  # no collection until the capture below, so the old engine stays in the youngest generation
    try:
        old = Engine()
        old.runner(x)
        old.runner(x)
        assert old.runner.graphs
        holder, seen = [old], []
        del old

        def body(t):
            if torch.cuda.is_current_stream_capturing():
                seen.append(gc.isenabled())
                holder.clear()  # the old engine is garbage now, its graph with it
                gc.set_threshold(1)  # the collector would run at the next allocations
                _ = [[] for _ in range(100)]
            return t * 2

        new = Graphed(body, cuda_graph=True, warmup=1, what="new step")
        new(x)
        assert torch.equal(new(x), x * 2)
    finally:
        gc.set_threshold(*thresholds)
    assert new.graphs, new.fallback_reason
    assert seen == [False] and gc.isenabled()
    broken = Graphed(lambda t: t * float(t.sum() > 0), cuda_graph=True, warmup=1, what="host sync")
    broken(x)
    with pytest.warns(GraphFallbackWarning, match="capture failed"):
        broken(x)
    assert gc.isenabled()
