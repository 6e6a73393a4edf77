"""Data-parallel training on CPU with gloo: 2 processes match 1, only rank 0 writes, a failing rank ends the job."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.multiprocessing as mp

from quatrain import ModelConfig
from quatrain._distributed import (
    DistContext,
    DistributedError,
    failing_fast,
    timeout_from_env,
    world_from_env,
)
from quatrain._errors import ConfigError
from quatrain._evaluate import evaluate
from quatrain._recipe import TrainConfig, prepare_data
from quatrain._train import train

JOB_TIMEOUT_S = 120.0
"""No test here may wait longer than this for its processes."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recipe(corpus: Path, vectors: Path, batch_size: int, epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig.preset("tiny", embed_dim=16),  # dropout 0
        corpus=str(corpus),
        embeddings=str(vectors),
        batch_size=batch_size,
        epochs=epochs,
        warmup_steps=2,
        patience=0,
        val_word_tokens=0,
        device="cpu",
        seed=3,
    )


def _rank_main(rank: int, world: int, port: int, config: TrainConfig, outs: list[str], resume: str | None) -> None:
    """One rank, as torchrun would start it: the environment, then quatrain's own train()."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        QUATRAIN_DIST_TIMEOUT="60",
    )
    torch.set_num_threads(1)
    train(config, outs[rank], resume=resume)


def _run_job(world: int, config: TrainConfig, outs: list[str], resume: str | None = None) -> None:
    """Run ``world`` ranks and wait at most JOB_TIMEOUT_S; a rank's error is raised here (the others ended)."""
    context = mp.start_processes(
        _rank_main, args=(world, _free_port(), config, outs, resume), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise AssertionError(f"the {world}-process job did not end within {JOB_TIMEOUT_S:.0f}s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def _weights(state: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in safetensors.torch.load_file(str(state)).items() if k.startswith("model.")}


@pytest.mark.slow
def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(poetry_files, tmp_path, monkeypatch):
    """Same seed, dropout 0: after two epochs the parameters agree within float tolerance; only rank 0 wrote."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    corpus, vectors = poetry_files
    # A split seed that leaves an even number of train windows, so neither rank pads its shard.
    single = next(
        c
        for c in (_recipe(corpus, vectors, batch_size=4).evolve(seed=s) for s in range(20))
        if len(prepare_data(c).windows["train"]) % 2 == 0
    )
    (tmp_path / "one").mkdir()
    one = train(single, tmp_path / "one" / "m.safetensors")
    outs = []
    for rank in range(2):
        (tmp_path / f"rank{rank}").mkdir()
        outs.append(str(tmp_path / f"rank{rank}" / "m.safetensors"))
    _run_job(2, single.evolve(batch_size=2), outs)

    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == [], "rank 1 must write nothing"
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [
        "m.log.jsonl",
        "m.safetensors",
        "m.state.safetensors",
    ]
    expected, got = _weights(one.state), _weights(tmp_path / "rank0" / "m.state.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        diff = (expected[name] - got[name]).abs().max().item()
        assert torch.allclose(expected[name], got[name], rtol=1e-4, atol=1e-5), f"{name}: max abs diff {diff:.3g}"
    assert one.history[-1]["train_loss"] == pytest.approx(
        _log(tmp_path / "rank0" / "m.log.jsonl")[-1]["train_loss"], rel=1e-4
    )


def _log(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_fast_with_its_rank_named(poetry_files, tmp_path):
    """Rank 1 cannot write its folder; rank 0 is waiting in a collective; the job ends at once, not at timeout."""
    corpus, vectors = poetry_files
    (tmp_path / "ok").mkdir()
    outs = [str(tmp_path / "ok" / "m.safetensors"), str(tmp_path / "missing" / "m.safetensors")]
    began = time.monotonic()
    with pytest.raises(Exception) as raised:
        _run_job(2, _recipe(corpus, vectors, batch_size=2, epochs=1), outs)
    assert time.monotonic() - began < 60, "the job waited for the collective timeout"
    text = str(raised.value)
    assert "rank 1 of 2 failed: CheckpointError" in text, text
    assert "does not exist" in text


def test_one_process_outside_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_from_env() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DistributedError, match="RANK=5 is outside WORLD_SIZE=2"):
        world_from_env()
    monkeypatch.delenv("RANK")
    with pytest.raises(DistributedError, match="RANK is not set; launch with torchrun"):
        world_from_env()


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUATRAIN_DIST_TIMEOUT", "12.5")
    assert timeout_from_env().total_seconds() == 12.5
    monkeypatch.setenv("QUATRAIN_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="QUATRAIN_DIST_TIMEOUT='soon'"):
        timeout_from_env()


def test_failing_fast_names_the_rank_only_in_a_job():
    with pytest.raises(ValueError, match="plain"), failing_fast(DistContext.single(torch.device("cpu"))):
        raise ValueError("plain")
    job = DistContext(rank=1, world_size=4)
    with pytest.raises(DistributedError, match=r"^rank 1 of 4 failed: ValueError: bad\s+value$"), failing_fast(job):
        raise ValueError("bad\nvalue")
    with pytest.raises(DistributedError, match="a peer rank failed or stopped answering"), failing_fast(job):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")


def test_evaluate_in_one_process_ignores_a_single_context(poetry_files, monkeypatch):
    """``dist`` of one process changes nothing: the reduction is the identity."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    corpus, vectors = poetry_files
    config = _recipe(corpus, vectors, batch_size=4)
    data = prepare_data(config)
    from quatrain import Autoencoder

    model = Autoencoder(config.model, backend="naive")
    plain = evaluate(model, data, "val", batch_size=3)
    single = evaluate(model, data, "val", batch_size=3, dist=DistContext.single(torch.device("cpu")))
    timing = ("setup_seconds", "seconds", "seq_per_s")
    assert {k: v for k, v in plain.items() if k not in timing} == {k: v for k, v in single.items() if k not in timing}


@pytest.mark.slow
def test_quatrain_train_nproc_runs_two_ranks_through_torchrun(poetry_files, tmp_path, monkeypatch):
    """``quatrain train --nproc 2`` relaunches itself under torchrun; rank 0 alone writes and reports."""
    from click.testing import CliRunner

    from quatrain.cli._main import cli

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("QUATRAIN_DIST_TIMEOUT", "60")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    corpus, vectors = poetry_files
    out = tmp_path / "run" / "m.safetensors"
    out.parent.mkdir()
    args = ["train", "--nproc", "2", "--preset", "tiny", "--corpus", str(corpus), "--embeddings", str(vectors),
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "torch.distributed.run --standalone --nproc-per-node=2 -m quatrain train" in result.output
    assert "--nproc" not in result.output.split("quatrain train", 1)[1]
    assert [r["world_size"] for r in _log(tmp_path / "run" / "m.log.jsonl")] == [2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.log.jsonl", "m.safetensors", "m.state.safetensors"]


@pytest.mark.slow
def test_every_rank_resumes_from_rank_0s_state(poetry_files, tmp_path, monkeypatch):
    """2 ranks: 1 epoch, then --resume to 2 on both ranks, end where 1 process of batch 2b ends after 2 epochs
    (the 2-process run's equivalence to it is the test above)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    corpus, vectors = poetry_files
    single = next(
        c
        for c in (_recipe(corpus, vectors, batch_size=4).evolve(seed=s) for s in range(20))
        if len(prepare_data(c).windows["train"]) % 2 == 0
    )
    for name in ("one", "first", "again", "spare"):
        (tmp_path / name).mkdir()
    one = train(single, tmp_path / "one" / "m.safetensors")
    first = [str(tmp_path / "first" / "m.safetensors"), str(tmp_path / "spare" / "m.safetensors")]
    _run_job(2, single.evolve(batch_size=2, epochs=1), first)
    resumed = [str(tmp_path / "again" / "m.safetensors"), first[1]]
    _run_job(2, single.evolve(batch_size=2), resumed, resume=str(tmp_path / "first" / "m.state.safetensors"))
    expected, got = _weights(one.state), _weights(tmp_path / "again" / "m.state.safetensors")
    for name in expected:
        diff = (expected[name] - got[name]).abs().max().item()
        assert torch.allclose(expected[name], got[name], rtol=1e-4, atol=1e-5), f"{name}: max abs diff {diff:.3g}"
    assert [r["epoch"] for r in _log(tmp_path / "again" / "m.log.jsonl")] == [1, 2]
    assert list((tmp_path / "spare").iterdir()) == []


def _helpers_main(rank: int, world: int, port: int, results: str) -> None:
    import json

    from quatrain._distributed import (
        all_reduce_sum,
        broadcast_from_main,
        broadcast_parameters,
        init_from_env,
        shutdown,
        sum_gradients,
    )
    from quatrain._trainstate import rng_tensors

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), QUATRAIN_DIST_TIMEOUT="60")  # fmt: skip
    ctx = init_from_env(torch.device("cpu"))
    chosen = broadcast_from_main(ctx, f"picked-on-{rank}" if rank == 0 else None)
    sums = all_reduce_sum(ctx, [1.0, rank + 0.5])
    layer = torch.nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.fill_(float(rank + 7))  # rank 0's weights win
    broadcast_parameters(ctx, layer)
    for p in layer.parameters():
        p.grad = torch.full_like(p, float(rank + 1))
    sum_gradients(ctx, list(layer.parameters()))
    torch.manual_seed(100 + rank)
    states = rng_tensors(ctx)
    Path(results, f"{rank}.json").write_text(
        json.dumps(
            {
                "backend": ctx.backend,
                "chosen": chosen,
                "sums": sums,
                "weight": layer.weight.flatten().tolist(),
                "grads": [p.grad.flatten().tolist() for p in layer.parameters()],
                "rng_keys": sorted(states),
                "rng_ranks_differ": not torch.equal(states["rng.torch"], states["rng.torch.rank1"]),
            }
        )
    )
    shutdown(ctx)


@pytest.mark.slow
def test_the_collective_helpers_on_two_gloo_ranks(tmp_path):
    import json

    context = mp.start_processes(
        _helpers_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            assert time.monotonic() < deadline, "the helpers' job hung"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert r["backend"] == "gloo"
        assert r["chosen"] == "picked-on-0", "rank 0's choice reaches every rank"
        assert r["sums"] == [2.0, 2.0]
        assert r["weight"] == [7.0] * 6, "every rank starts from rank 0's weights"
        assert r["grads"] == [[3.0] * 6, [3.0] * 3], "gradients summed over the ranks"
    assert results[0]["rng_keys"] == ["rng.torch", "rng.torch.rank1"]
    assert results[0]["rng_ranks_differ"]
