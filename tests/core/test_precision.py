"""A job's precision (quatrain._precision): 'tf32' runs the whole step, forward and backward, with CUDA float32
matmuls on TF32 tensor cores, restores the settings after it, and is refused off CUDA in one line."""

from __future__ import annotations

import copy

import pytest
import torch

import quatrain
from quatrain import ConfigError
from quatrain import _trainstep as trainstep
from quatrain._precision import PRECISIONS, precision_problem, step_precision
from quatrain._trainstep import InferenceStep, TrainStep

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_process(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(name="restored")
def _restored():
    """The process's two TF32 settings put back after the test, whatever it set."""
    before = _flags()
    yield
    _set_process(*before)


@pytest.fixture(name="tf32_off")
def _tf32_off(restored):
    """Both settings off for the test (cuDNN's default is on)."""
    _set_process(False, False)


@pytest.fixture(name="tf32_on")
def _tf32_on(restored):
    """Both on for the test, as a caller's script might set them."""
    _set_process(True, True)


def test_tf32_turns_both_settings_on_inside_the_block_and_restores_them(tf32_off):
    with step_precision("tf32"):
        assert _flags() == (True, True)
    assert _flags() == (False, False)
    with pytest.raises(KeyError), step_precision("tf32"):
        raise KeyError("a failing step")
    assert _flags() == (False, False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_other_precisions_run_ieee_matmuls_whatever_the_process_set(restored, precision):
    """fp32 means IEEE float32 matmuls even where the caller turned TF32 on; cuDNN keeps the process's setting
    (PyTorch's default lets its RNNs use TF32)."""
    for matmul, cudnn in [(True, True), (False, False), (True, False)]:
        _set_process(matmul, cudnn)
        with step_precision(precision):
            assert _flags() == (False, cudnn)
        assert _flags() == (matmul, cudnn)


def test_problems_name_the_precision_and_the_device():
    cpu = torch.device("cpu")
    assert precision_problem("fp32", cpu) is None and precision_problem("fp32", cpu, "lstm") is None
    assert precision_problem("tf32", torch.device("cuda"), "lstm") is None
    assert "NVIDIA" in precision_problem("tf32", cpu)
    assert "NVIDIA" in precision_problem("tf32", torch.device("mps"), "gru")
    assert "unknown precision 'fp8'" in precision_problem("fp8", cpu)
    assert precision_problem("bf16", cpu) is None  # without an RNN to probe, nothing to refuse
    assert PRECISIONS == ("fp32", "tf32", "bf16")


@pytest.mark.parametrize("precision", ["tf32", "fp8"])
def test_steps_refuse_a_precision_the_device_cannot_run(tiny, precision):
    model = quatrain.Autoencoder(tiny)
    with pytest.raises(ValueError, match=f"precision '{precision}'"):
        TrainStep(model, precision=precision)
    with pytest.raises(ValueError, match=f"precision '{precision}'"):
        InferenceStep(model, precision=precision)


def _recorded(model: quatrain.Autoencoder) -> list[tuple[str, bool]]:
    """What the matmul setting was in the forward and when the gradient of a weight was computed."""
    seen: list[tuple[str, bool]] = []
    model.register_forward_hook(lambda *_: seen.append(("forward", torch.backends.cuda.matmul.allow_tf32)))
    weight = next(model.parameters())
    weight.register_hook(lambda grad: seen.append(("backward", torch.backends.cuda.matmul.allow_tf32)))
    return seen


def test_a_tf32_train_step_runs_forward_and_backward_under_tf32(tiny, make_batch, tf32_off, monkeypatch):
    """The step's context spans the backward too (the gradient matmuls are most of a step's); on CPU the
    device check is lifted to watch the setting, which CPU kernels ignore."""
    monkeypatch.setattr(trainstep, "require_precision", lambda precision, device: None)
    model = quatrain.Autoencoder(tiny)
    twin = copy.deepcopy(model)
    seen = _recorded(model)
    x, mask = make_batch(tiny, [5, 3])
    torch.manual_seed(1)  # the same coins and dropout for both steps
    loss = TrainStep(model, teacher_forcing=0.5, precision="tf32")(x, mask)
    assert seen == [("forward", True), ("backward", True)]
    assert _flags() == (False, False)
    torch.manual_seed(1)
    torch.testing.assert_close(loss, TrainStep(twin, teacher_forcing=0.5)(x, mask))  # CPU: the same arithmetic
    seen.clear()
    InferenceStep(model, precision="tf32")(x, mask)
    assert seen == [("forward", True)] and _flags() == (False, False)


def test_an_fp32_step_runs_ieee_matmuls_where_the_process_set_tf32(tiny, make_batch, tf32_on):
    """A caller's global TF32 matmuls do not reach an fp32 step, forward or backward, or an fp32 inference."""
    model = quatrain.Autoencoder(tiny)
    seen = _recorded(model)
    x, mask = make_batch(tiny, [5, 3])
    TrainStep(model, teacher_forcing=0.5)(x, mask)
    assert seen == [("forward", False), ("backward", False)]
    seen.clear()
    InferenceStep(model)(x, mask)
    assert seen == [("forward", False)] and _flags() == (True, True)


def test_train_refuses_tf32_off_cuda_before_any_work(poetry_files, tmp_path):
    vectors = poetry_files[1]
    config = quatrain.TrainConfig(
        model=quatrain.ModelConfig.preset("tiny"), corpus=str(tmp_path / "never-read.txt"), embeddings=str(vectors),
        device="cpu", precision="tf32",
    )  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="precision 'tf32': TF32 is the tensor-core float32 arithmetic"):
        quatrain.train(config, run / "m.safetensors")
    assert list(run.iterdir()) == []


@CUDA
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_on_cuda_a_tf32_step_stays_close_to_float32_and_restores_the_settings(tiny, make_batch, tf32_off, cuda_graph):
    """TF32 products keep 10 mantissa bits: the loss of a tf32 step is near the float32 step's, not equal to it
    bit for bit, and the settings are back to what they were after every step, captured or not."""
    torch.manual_seed(0)
    base = quatrain.Autoencoder(tiny)
    model, twin = copy.deepcopy(base).cuda(), base.cuda()  # .cuda() after the copy: cuDNN's weights stay one chunk
    seen = _recorded(model)
    x, mask = (t.cuda() for t in make_batch(tiny, [7, 5, 2]))
    fast = TrainStep(model, teacher_forcing=1.0, precision="tf32", cuda_graph=cuda_graph, warmup=1)
    exact = TrainStep(twin, teacher_forcing=1.0, cuda_graph=cuda_graph, warmup=1)
    for _ in range(3):
        torch.testing.assert_close(fast(x, mask), exact(x, mask), rtol=1e-2, atol=1e-3)
        assert _flags() == (False, False)
    assert seen and all(on for _, on in seen)  # the eager calls (warm-up and capture) ran under TF32


def test_the_cli_offers_every_precision_and_no_other():
    """The CLI spells the list itself (building it imports no torch); it must stay the engine's."""
    from quatrain.cli._common import PRECISIONS as offered

    assert offered == PRECISIONS
