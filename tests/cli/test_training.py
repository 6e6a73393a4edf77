"""quatrain train / eval / reconstruct end to end on a tiny corpus, and every bad-input case."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from quatrain.cli._main import cli


def _train_args(corpus, vectors, out, *extra):
    return [
        "train", "--preset", "tiny", "--corpus", str(corpus), "--embeddings", str(vectors), "--epochs", "2",
        "--batch-size", "8", "--device", "cpu", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _selection_cache(tmp_path_factory):
    """--backend auto caches its decisions here, never in the user's cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUATRAIN_CACHE", str(tmp_path_factory.mktemp("selection")))
        yield


@pytest.fixture(name="trained_once", scope="module")
def _trained_once(shared_poetry_files):
    """One tiny training run shared by the tests of this module (default backend: auto)."""
    corpus, vectors = shared_poetry_files
    out = corpus.parent / "m.safetensors"
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, out))
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(name="trained")
def _trained(trained_once, tmp_path):
    """A private copy of the shared run (tests that resume it write to it)."""
    import shutil

    out, result = trained_once
    for path in out.parent.glob("m.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "m.safetensors", result


def test_train_writes_checkpoint_state_and_log(trained):
    out, result = trained
    assert out.is_file() and out.with_name("m.state.safetensors").is_file()
    records = [json.loads(line) for line in out.with_name("m.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "val_loss", "val_cosine", "val_word_top1", "seconds", "seq_per_s", "backend"):
        assert key in records[0]
    line = f"{records[0]['backend']}: fastest correct for cpu float32 training at teacher forcing 1"  # auto
    assert sum(line in row for row in result.output.splitlines()) == 1, result.output
    assert "measured now against" in result.output
    assert "epoch 2/2" in result.output and "seq/s" in result.output  # the progress line (stderr)
    assert "coverage" in result.output  # the data summary


def test_eval_json_reports_autoregressive_metrics(trained):
    out, _ = trained
    result = CliRunner().invoke(cli, ["eval", str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["teacher_forcing"] == 0.0 and report["split"] == "test"
    assert f"{report['backend']}: fastest correct for cpu float32 inference" in result.stderr
    assert 0 <= report["word_top1"] <= report["word_top5"] <= 1
    assert -1 <= report["cosine"] <= 1 and report["tokens"] > 0
    assert 0 < len(report["per_position_cosine"]) <= 12  # up to the longest test window


def test_reconstruct_text_and_held_out_lines(trained):
    out, _ = trained
    result = CliRunner().invoke(cli, ["reconstruct", str(out), "Sweet rose of the night / my heart", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "sweet rose of the night" in result.output and "cosine" in result.output
    result = CliRunner().invoke(cli, ["reconstruct", str(out), "--json", "--lines", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["lines"]) == 3


def test_reconstruct_plot_writes_an_image(trained, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = trained
    plot = tmp_path / "attn.png"
    result = CliRunner().invoke(cli, ["reconstruct", str(out), "the rose", "--plot", str(plot), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_flag_prints_data_facts(poetry_files, registry):
    corpus, vectors = poetry_files
    result = CliRunner().invoke(
        cli, ["train", "--summary", "--json", "--corpus", str(corpus), "--embeddings", str(vectors)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["poems"] == 18 and summary["dim"] == 16 and set(summary["split"]) == {"train", "val", "test"}


def test_resume_with_another_recipe_is_refused(trained, registry):
    out, _ = trained
    result = CliRunner().invoke(cli, ["train", "--resume", str(out), "--lr", "0.5", "--epochs", "3"])
    assert result.exit_code == 1
    assert "cannot resume" in result.output and "lr=0.002" in result.output


def test_resume_continues_to_more_epochs(trained, registry):
    out, _ = trained
    result = CliRunner().invoke(cli, ["train", "--resume", str(out), "--epochs", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    records = out.with_name("m.log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == [1, 2, 3]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.joinpath("empty.txt").write_text(""), "holds no text"),
        (lambda d: d.joinpath("latin1.txt").write_bytes("caf\xe9 rose\n".encode("latin-1")), "is not UTF-8"),
        (lambda d: d.joinpath("r.json").write_text('[{"title": "x"}]'), "has no 'text'"),
        (lambda d: d.joinpath("r.jsonl").write_text('{"text": "the rose"}\n{"body": 1}\n'), "record 2 has no 'text'"),
        (lambda d: d.joinpath("unknown.txt").write_text("zzyzx qwv\n\nqwv\n\nzzyzx\n"), "has a word that embeddings"),
    ],
    ids=["empty-file", "non-utf8", "json-without-text", "jsonl-without-text", "no-known-word"],
)
def test_bad_corpus_is_one_clear_error(poetry_files, tmp_path, make, message):
    _, vectors = poetry_files
    folder = tmp_path / "bad"
    folder.mkdir()
    make(folder)
    corpus = next(folder.iterdir())
    out = tmp_path / "never.safetensors"
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, out))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.glob("never*")) == []


def test_folder_without_text_is_refused(poetry_files, tmp_path):
    _, vectors = poetry_files
    folder = tmp_path / "pics"
    folder.mkdir()
    folder.joinpath("a.png").write_bytes(b"\x89PNG")
    result = CliRunner().invoke(cli, _train_args(folder, vectors, tmp_path / "m.safetensors"))
    assert result.exit_code == 1 and "holds no .txt, .json or .jsonl file" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [("a 1.0 2.0\nb 1.0\n", "line 2: 1 values, expected 2"), ("a 1.0 2.0\nb nan 1.0\n", "NaN or infinite")],
    ids=["ragged", "nan"],
)
def test_bad_embeddings_are_one_clear_error(poetry_files, tmp_path, content, message):
    corpus, _ = poetry_files
    vectors = tmp_path / "bad.txt"
    vectors.write_text(content)
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, tmp_path / "m.safetensors"))
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.safetensors").exists()


def test_plot_without_matplotlib_is_a_clear_error(trained, monkeypatch):
    import builtins

    out, _ = trained
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    plot = out.with_name("attn.png")
    result = CliRunner().invoke(cli, ["reconstruct", str(out), "the rose", "--plot", str(plot)])
    assert result.exit_code == 1 and "needs matplotlib" in result.output
    assert not plot.exists()


def test_every_command_has_help():
    for name in ("train", "eval", "reconstruct"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_train_auto_reuses_its_cached_decision(trained_once, shared_poetry_files, tmp_path):
    corpus, vectors = shared_poetry_files
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, tmp_path / "again.safetensors"))
    assert result.exit_code == 0, result.output
    assert "; cached decision" in result.output


def test_eval_and_reconstruct_run_a_checkpoint_on_the_backend_named(trained):
    """A checkpoint saved by one backend runs on another through the exact layout converters, on load."""
    out, _ = trained
    saved = json.loads(CliRunner().invoke(cli, ["eval", str(out), "--json", "--device", "cpu"]).stdout)
    other = "naive" if saved["backend"] != "naive" else "fused-qkv"
    result = CliRunner().invoke(cli, ["eval", str(out), "--json", "--device", "cpu", "--backend", other])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backend"] == other and f"{other}: named with --backend" in result.stderr
    assert report["cosine"] == pytest.approx(saved["cosine"], abs=1e-5)
    assert report["word_top1"] == saved["word_top1"]
    result = CliRunner().invoke(cli, ["reconstruct", str(out), "the rose", "--device", "cpu", "--backend", other])
    assert result.exit_code == 0, result.output
    assert f"{other}: named with --backend" in result.stderr


def test_python_api_default_backend_stays_naive():
    import quatrain

    assert quatrain.Autoencoder(quatrain.ModelConfig.preset("tiny")).backend == "naive"
    assert quatrain.TrainConfig(model=quatrain.ModelConfig.preset("tiny")).backend == "naive"


def test_train_at_tf32_off_cuda_is_one_line_and_writes_nothing(poetry_files, tmp_path):
    corpus, vectors = poetry_files
    out = tmp_path / "run" / "m.safetensors"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, _train_args(corpus, vectors, out, "--precision", "tf32"))
    assert result.exit_code != 0
    assert "precision 'tf32': TF32 is the tensor-core float32 arithmetic of NVIDIA GPUs" in result.output
    assert "Traceback" not in result.output
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "reconstruct"])
def test_tf32_off_cuda_is_refused_before_the_data_loads(trained, command):
    out, _ = trained
    result = CliRunner().invoke(cli, [command, str(out), "--device", "cpu", "--precision", "tf32"])
    assert result.exit_code == 2
    assert "TF32 is the tensor-core float32 arithmetic of NVIDIA GPUs" in result.output
    assert "loading the corpus" not in result.output and "Traceback" not in result.output


def _engine_precisions(module, monkeypatch) -> list[str | None]:
    """The precision each ``InferenceStep`` that ``module`` makes is asked for; skips where this CPU cannot run
    a bfloat16 LSTM under autocast (the tests then ask for bf16)."""
    import torch

    from quatrain import ModelConfig
    from quatrain._rnn import autocast_problem

    if (problem := autocast_problem(ModelConfig.preset("tiny").rnn, torch.device("cpu"))) is not None:
        pytest.skip(problem)
    seen: list[str | None] = []

    class Spy(module.InferenceStep):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("precision"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(module, "InferenceStep", Spy)
    return seen


def test_reconstruct_runs_at_the_precision_asked_for(trained, monkeypatch):
    """--precision reaches backend selection and the inference engine, and the JSON names both."""
    import quatrain._reconstruct as reconstruct

    seen = _engine_precisions(reconstruct, monkeypatch)
    out, _ = trained
    args = ["reconstruct", str(out), "the rose / of night", "--json", "--device", "cpu"]
    exact = json.loads(CliRunner().invoke(cli, args).stdout)
    result = CliRunner().invoke(cli, [*args, "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert seen == ["fp32", "bf16"] and (exact["precision"], report["precision"]) == ("fp32", "bf16")
    assert "fastest correct for cpu bfloat16 inference" in result.stderr
    assert report["backend"] in result.stderr
    assert [line["text"] for line in report["lines"]] == ["the rose", "of night"]


def test_eval_runs_at_the_precision_asked_for(trained, monkeypatch):
    """--precision reaches the inference engine (and backend selection times that job); bf16 autocast
    decodes near the float32 result."""
    import quatrain._evaluate as evaluate

    seen = _engine_precisions(evaluate, monkeypatch)
    out, _ = trained
    exact = json.loads(CliRunner().invoke(cli, ["eval", str(out), "--json", "--device", "cpu"]).stdout)
    result = CliRunner().invoke(cli, ["eval", str(out), "--json", "--device", "cpu", "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert seen == ["fp32", "bf16"] and (exact["precision"], report["precision"]) == ("fp32", "bf16")
    assert "fastest correct for cpu bfloat16 inference" in result.stderr
    assert report["cosine"] == pytest.approx(exact["cosine"], abs=0.05) and report["cosine"] != exact["cosine"]
