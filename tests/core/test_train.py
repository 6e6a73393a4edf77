"""The trainer: exact resume, early stopping, time limit, atomic checkpoints under write failure, recipes."""

from __future__ import annotations

import json
import os

import pytest
import torch

import quatrain
from quatrain import CheckpointError, ConfigError
from quatrain._evaluate import evaluate, evaluate_checkpoint
from quatrain._recipe import TeacherForcing, TrainConfig, paths_for
from quatrain._train import train
from quatrain._trainstate import read_state
from quatrain.data import build_data, load_corpus, load_embeddings


@pytest.fixture(name="data")
def _data(poetry_files):
    corpus, vectors = poetry_files
    return build_data(load_corpus(corpus), load_embeddings(vectors), max_len=12, seed=0)


def _config(poetry_files, **changes):
    corpus, vectors = poetry_files
    model = quatrain.ModelConfig.preset("tiny", dropout=0.1)
    base = dict(
        model=model, corpus=str(corpus), embeddings=str(vectors), epochs=2, batch_size=8, device="cpu",
        teacher_forcing="0.7", warmup_steps=3, patience=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def _metrics(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "val_seconds", "seq_per_s")} for r in history]


def test_resume_continues_exactly(poetry_files, data, tmp_path):
    """Training 2 epochs equals training 1 and resuming for 1: same parameters, same logged metrics."""
    full = train(_config(poetry_files, epochs=2), tmp_path / "full.safetensors", data=data)
    train(_config(poetry_files, epochs=1), tmp_path / "half.safetensors", data=data)
    resumed = train(
        _config(poetry_files, epochs=2), tmp_path / "half.safetensors", resume=tmp_path / "half.safetensors"
    )
    assert _metrics(resumed.history) == _metrics(full.history)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log = [json.loads(line) for line in (tmp_path / "half.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_checkpoint_records_recipe_split_and_backend(poetry_files, data, tmp_path):
    result = train(_config(poetry_files, epochs=1), tmp_path / "m.safetensors", data=data)
    info = quatrain.read_info(result.checkpoint)
    assert info.backend == "naive" == result.history[0]["backend"]
    saved = json.loads(info.metadata["data"])
    assert saved["split"] == data.split and saved["fingerprint"] == data.corpus.fingerprint()
    assert TrainConfig.from_dict(json.loads(info.metadata["train"])) == _config(poetry_files, epochs=1)
    report = evaluate_checkpoint(result.checkpoint, "test", device="cpu")
    assert report["teacher_forcing"] == 0.0 and report["windows"] == len(data.windows["test"])
    assert report["precision"] == "fp32"
    with pytest.raises(ConfigError, match="precision 'tf32': TF32 is the tensor-core float32 arithmetic"):
        evaluate_checkpoint(result.checkpoint, "test", device="cpu", precision="tf32", data=data)


def test_resume_from_another_recipe_is_refused(poetry_files, data, tmp_path):
    train(_config(poetry_files, epochs=1), tmp_path / "m.safetensors", data=data)
    with pytest.raises(ConfigError, match=r"trained with batch_size=8, this run asks batch_size=4"):
        train(
            _config(poetry_files, epochs=2, batch_size=4), tmp_path / "m.safetensors", resume=tmp_path / "m.safetensors"
        )
    with pytest.raises(ConfigError, match="trained with model="):
        other = _config(poetry_files, model=quatrain.ModelConfig.preset("tiny", hidden_size=64))
        train(other, tmp_path / "m.safetensors", resume=tmp_path / "m.safetensors")


def test_write_failure_keeps_the_previous_checkpoint(poetry_files, data, tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    train(_config(poetry_files, epochs=1), out, data=data)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.*")}
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(_config(poetry_files, epochs=2), out, resume=out, data=data)
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*")} == before  # nothing half-written, no temp files
    assert not list(tmp_path.glob(".*.tmp"))
    assert quatrain.load(out).num_parameters() > 0


def test_early_stopping_on_validation_loss(poetry_files, data, tmp_path, monkeypatch):
    import quatrain._train as trainer

    losses = iter([0.5, 0.4, 0.45, 0.47, 0.3])
    real = trainer.SplitEvaluator.__call__

    def fake(*args, **kwargs):
        return {**real(*args, **kwargs), "loss": next(losses)}

    monkeypatch.setattr(trainer.SplitEvaluator, "__call__", fake)
    result = train(_config(poetry_files, epochs=5, patience=2), tmp_path / "m.safetensors", data=data)
    assert result.stop_reason == "early-stopping" and len(result.history) == 4 and result.best_epoch == 2
    assert json.loads(quatrain.read_info(result.checkpoint).metadata["epoch"]) == 2  # the best one is kept


def test_save_every_defers_the_writes_and_keeps_the_best_epoch(poetry_files, data, tmp_path, monkeypatch):
    """With a long --save-every the best epoch's weights wait on the device and are written after the last
    epoch: the same checkpoint as writing after every epoch, and the state written once."""
    import quatrain._train as trainer

    losses = iter([0.5, 0.4, 0.45] * 2)
    real = trainer.SplitEvaluator.__call__
    monkeypatch.setattr(trainer.SplitEvaluator, "__call__", lambda *a, **k: {**real(*a, **k), "loss": next(losses)})
    written = []
    real_write = trainer.write_state
    monkeypatch.setattr(trainer, "write_state", lambda *a, **k: written.append(a[-1]["epoch"]) or real_write(*a, **k))
    each = train(_config(poetry_files, epochs=3, save_every=0), tmp_path / "each.safetensors", data=data)
    assert written == [1, 2, 3]
    seen = []
    late = train(
        _config(poetry_files, epochs=3, save_every=1e9),
        tmp_path / "late.safetensors",
        data=data,
        on_epoch=lambda r: seen.append(paths_for(tmp_path / "late.safetensors")[0].exists()),
    )
    assert written == [1, 2, 3, 3] and seen == [False, False, True]
    assert each.best_epoch == late.best_epoch == 2
    a, b = quatrain.load(each.checkpoint), quatrain.load(late.checkpoint)
    assert json.loads(quatrain.read_info(late.checkpoint).metadata["epoch"]) == 2
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(next(iter(late.model.state_dict().values())), next(iter(b.state_dict().values())))


def test_time_limit_stops_after_the_epoch_that_crosses_it(poetry_files, data, tmp_path):
    result = train(_config(poetry_files, epochs=5, time_limit=1e-6), tmp_path / "m.safetensors", data=data)
    assert result.stop_reason == "time-limit" and len(result.history) == 1


def test_state_file_is_safetensors_with_json_metadata(poetry_files, data, tmp_path):
    train(_config(poetry_files, epochs=1), tmp_path / "m.safetensors", data=data)
    meta, tensors, header = read_state(tmp_path / "m.safetensors")
    assert header["format"] == "quatrain-train-state/1" and meta["epoch"] == 1
    assert "rng.torch" in tensors and any(k.startswith("optim.") for k in tensors)
    assert paths_for(tmp_path / "m.safetensors")[1] == tmp_path / "m.state.safetensors"


def test_evaluate_is_autoregressive_and_restores_mode(poetry_files, data):
    model = quatrain.Autoencoder(_config(poetry_files).model)
    model.train()
    free = evaluate(model, data, "val")
    forced = evaluate(model, data, "val", teacher_forcing=1.0)
    assert model.training and free["teacher_forcing"] == 0.0
    assert free["cosine"] != forced["cosine"]
    assert free["word_tokens"] == free["tokens"]


def test_embedding_size_must_match_the_model(poetry_files, tmp_path):
    config = _config(poetry_files, model=quatrain.ModelConfig.preset("small"))
    with pytest.raises(ConfigError, match="16-d but the model's embed_dim is 50"):
        train(config, tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    ("text", "epochs", "expected"),
    [("1.0", [1, 9], [1.0, 1.0]), ("1.0:0.5:3", [1, 2, 3, 7], [1.0, 0.75, 0.5, 0.5]), ("0", [1], [0.0])],
)
def test_teacher_forcing_schedule(text, epochs, expected):
    schedule = TeacherForcing.parse(text)
    assert [schedule.at(e) for e in epochs] == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1.5", "a", "1:0", "1:0:0"])
def test_bad_teacher_forcing_is_refused(text):
    with pytest.raises(ConfigError, match="teacher forcing"):
        TeacherForcing.parse(text)


def test_train_config_round_trips_and_rejects_unknown_fields(poetry_files):
    config = _config(poetry_files)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown training field"):
        TrainConfig.from_dict({**config.to_dict(), "momentum": 0.9})
    with pytest.raises(ConfigError, match="precision"):
        config.evolve(precision="fp8")


def test_bf16_on_a_cpu_without_bf16_rnns_is_refused_before_any_work(poetry_files, tmp_path, monkeypatch):
    """oneDNN creates no bfloat16 LSTM below AVX-512; the trainer says so in one line, before the data loads
    and before anything is written (the probe's failure is simulated: whether it fails depends on the CPU)."""
    from quatrain import _rnn

    class NoBf16(torch.nn.LSTM):
        def forward(self, *args, **kwargs):
            if torch.is_autocast_enabled("cpu"):
                raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")
            return super().forward(*args, **kwargs)

    monkeypatch.setitem(_rnn._RNN, "lstm", NoBf16)
    assert "cannot run a bfloat16 lstm" in _rnn.autocast_problem("lstm", torch.device("cpu"))
    assert _rnn.autocast_problem("lstm", torch.device("cuda")) is None  # CUDA runs bf16 RNNs (cuDNN)
    config = _config(poetry_files, precision="bf16", corpus=str(tmp_path / "never-read.txt"))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="precision 'bf16': this CPU cannot run a bfloat16 lstm"):
        train(config, run / "m.safetensors")
    assert list(run.iterdir()) == []
