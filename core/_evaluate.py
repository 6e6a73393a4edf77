"""Evaluation: held-out metrics of a model on one split, fully autoregressive by default, decoded through the
step engine's ``InferenceStep`` (CUDA graphs on GPU) with every sum kept on the device until the end."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._batches import Batch, SplitBatches
from ._checkpoint import read_info
from ._distributed import DistContext, all_reduce_sum
from ._errors import CheckpointError, ConfigError
from ._loss import reconstruction_loss
from ._metrics import word_ranks
from ._model import Autoencoder
from ._recipe import TrainConfig, prepare_data, resolve_device
from ._trainstep import InferenceStep, autocast, synchronize
from .data import PoetryData


def _word_sample(mask: Tensor, count: int, seed: int) -> Tensor:
    """A fixed seeded subset of ``count`` real tokens of ``mask`` (all of them when count is 0 or larger)."""
    total = int(mask.sum())
    if count == 0 or count >= total:
        return mask.clone()
    flat = torch.nonzero(mask.flatten()).squeeze(1)
    chosen = flat[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]]
    sample = torch.zeros(mask.numel(), dtype=torch.bool)
    sample[chosen] = True
    return sample.view_as(mask)


class _Sums:
    """Token-weighted metric sums kept on the device (read once, by ``result``); counts known on the host.

    The word search runs on the decode's stream: on a second stream it did not overlap the next batch's
    replay on the H200 (benchmarks/h200-2026-12-02b/README.md, run 5).
    """

    def __init__(self, batches: SplitBatches, vocabulary: Tensor | None, sample: Tensor | None) -> None:
        device = batches.table.device
        acc = torch.float32 if device.type == "mps" else torch.float64
        self.scalars = torch.zeros(4, dtype=acc, device=device)  # loss x tokens, cosine, top-1, top-5
        length = batches.mask.shape[1]
        self.position = torch.zeros(length, dtype=acc, device=device)
        self.position_count = batches.mask_host.sum(dim=0).tolist()
        self.tokens = int(batches.lengths.sum())
        self.vocabulary = F.normalize(vocabulary.float(), dim=-1, eps=1e-8) if vocabulary is not None else None
        self.word_tokens = 0
        self.where: list[Tensor] = []  # per batch: its word-search positions, flat in (rows x length)
        if self.vocabulary is not None and sample is not None:
            chosen = torch.zeros_like(batches.mask_host)
            chosen[: len(sample)] = sample
            for i in range(len(batches)):
                first, run, T = batches.span(i)
                flat = torch.nonzero(chosen[first : first + run, :T].flatten()).squeeze(1)
                self.where.append(flat)
            self.word_tokens = sum(len(w) for w in self.where)
            offsets = torch.cumsum(torch.tensor([0] + [len(w) for w in self.where]), 0).tolist()
            joined = torch.cat(self.where).to(device) if self.where else torch.zeros(0, dtype=torch.long)
            self.where = [joined[offsets[i] : offsets[i + 1]] for i in range(len(self.where))]

    def add(self, i: int, pred: Tensor, batch: Batch) -> None:
        T = batch.mask.shape[1]
        weight = batch.mask.to(self.scalars.dtype)
        cos = F.cosine_similarity(pred.float(), batch.x.float(), dim=-1, eps=1e-8).to(self.scalars.dtype) * weight
        loss = reconstruction_loss(pred.float(), batch.x.float(), batch.mask).to(self.scalars.dtype)
        self.scalars[0] += loss * batch.tokens
        self.scalars[1] += cos.sum()
        self.position[:T] += cos.sum(dim=0)
        if self.vocabulary is not None and self.where and len(self.where[i]) and batch.ids is not None:
            where = self.where[i]
            flat = pred.reshape(-1, pred.shape[-1]).index_select(0, where)
            ranks = word_ranks(flat, self.vocabulary, batch.ids.reshape(-1).index_select(0, where))
            self.scalars[2] += (ranks == 0).sum()
            self.scalars[3] += (ranks < 5).sum()

    def result(self, dist: DistContext | None) -> dict[str, Any]:
        values = self.scalars.tolist()
        positions = self.position.tolist()
        counts = [float(c) for c in self.position_count]
        head = [float(self.tokens), float(self.word_tokens), *values]
        if dist is not None and dist.is_distributed:
            head, positions, counts = (all_reduce_sum(dist, v) for v in (head, positions, counts))
        tokens, word_tokens, loss, cosine, top1, top5 = head
        keep = max((i + 1 for i, c in enumerate(counts) if c), default=0)
        words = self.vocabulary is not None
        return {
            "tokens": int(tokens),
            "loss": loss / max(tokens, 1.0),
            "cosine": cosine / max(tokens, 1.0),
            "word_top1": top1 / max(word_tokens, 1.0) if words else None,
            "word_top5": top5 / max(word_tokens, 1.0) if words else None,
            "word_tokens": int(word_tokens),
            "per_position_cosine": [round(s / c, 6) if c else None for s, c in zip(positions, counts, strict=True)][
                :keep
            ],
        }


def evaluate(
    model: Autoencoder,
    data: PoetryData,
    split: str = "test",
    *,
    batch_size: int = 256,
    teacher_forcing: float = 0.0,
    words: bool = True,
    word_sample: int = 0,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    dist: DistContext | None = None,
    step: InferenceStep | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on one split of ``data``, fully autoregressive by default.

    Args:
        model: the autoencoder (its mode is restored afterwards).
        data: the windows and embeddings.
        split: 'train', 'val' or 'test'.
        batch_size: windows per forward pass (the last batch is padded with empty rows on CUDA).
        teacher_forcing: 0.0 (default) decodes through the engine's ``InferenceStep``; above 0 the
            forward runs eagerly with that teacher forcing.
        words: also measure nearest-word top-1/top-5 against the whole embedding vocabulary.
        word_sample: measure word accuracy on this many tokens only (a fixed sample; 0 = all).
        device: where to run (default: the model's device).
        precision: 'fp32' or 'bf16' autocast.
        dist: in a distributed job, each rank measures every world_size-th window and the sums are
            reduced, so every rank returns the whole split's metrics.
        step: an ``InferenceStep`` of ``model`` to reuse (the trainer keeps one, so its graphs are
            captured once per run, not once per validation).

    Returns:
        {'split', 'windows', 'tokens', 'loss', 'cosine', 'word_top1', 'word_top5', 'word_tokens',
        'per_position_cosine', 'teacher_forcing', 'setup_seconds', 'seconds', 'seq_per_s'}: 'setup_seconds'
        is the step's warm-up and CUDA-graph capture before the first batch (0 off CUDA or when ``step``
        has its graph already), 'seconds' the decode and metric loop after it, device-synchronised, and
        'seq_per_s' this rank's windows over 'seconds'.
    """
    if split not in data.windows:
        raise ConfigError(f"unknown split {split!r}; splits: {', '.join(data.windows)}")
    windows = data.windows[split]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    table = torch.from_numpy(data.embeddings.vectors).to(device)
    rows = None
    if dist is not None and dist.is_distributed:
        rows = torch.arange(len(windows))[dist.rank :: dist.world_size]
    static = device.type == "cuda"
    batches = SplitBatches(windows.ids, windows.lengths, table, batch_size=batch_size, static=static, rows=rows)
    sample = None
    if words:
        sample = _word_sample(windows.mask, word_sample, data.seed)
        sample = sample[rows] if rows is not None else sample
    sums = _Sums(batches, table if words else None, sample)
    was_training = model.training
    if step is None and teacher_forcing == 0.0:
        step = InferenceStep(model, cuda_graph=static, warmup=1, precision=precision)  # splits are a few batches
    model.eval()
    setup = 0.0
    try:
        if step is not None and teacher_forcing == 0.0 and len(batches):
            tick = time.perf_counter()
            if step.prepare(batches[0]):
                synchronize(device)
                setup = time.perf_counter() - tick
        tick = time.perf_counter()
        for i in range(len(batches)):
            batch = batches[i]
            if step is not None and teacher_forcing == 0.0:
                pred = step.run(batch)
            else:
                with torch.no_grad(), autocast(device, precision):
                    pred = model(batch.x, batch.mask, teacher_forcing=teacher_forcing).reconstruction.float()
            sums.add(i, pred, batch)
        result = sums.result(dist)  # reads the device once
        seconds = time.perf_counter() - tick
    finally:
        model.train(was_training)
    return {
        "split": split,
        "windows": len(windows),
        **{k: result[k] for k in ("tokens", "loss", "cosine", "word_top1", "word_top5")},
        "word_tokens": result["word_tokens"] if words else 0,
        "per_position_cosine": result["per_position_cosine"],
        "teacher_forcing": teacher_forcing,
        "setup_seconds": setup,
        "seconds": seconds,
        "seq_per_s": batches.count / max(seconds, 1e-9),
    }


def data_for_checkpoint(path: str | os.PathLike[str]) -> PoetryData:
    """Rebuild the exact data (corpus, embeddings, split) a checkpoint was trained on; refuse a changed corpus."""
    info = read_info(path)
    if "data" not in info.metadata or "train" not in info.metadata:
        raise CheckpointError(f"{str(path)!r} was not written by quatrain train: it records no data split")
    meta = json.loads(info.metadata["data"])
    config = TrainConfig.from_dict(json.loads(info.metadata["train"]))
    data = prepare_data(config, split=meta["split"])
    if data.corpus.fingerprint() != meta["fingerprint"]:
        raise CheckpointError(
            f"{str(path)!r}: corpus {config.corpus!r} has changed since training (its fingerprint differs), "
            "so the saved split no longer names the same poems"
        )
    return data


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    device: str = "auto",
    batch_size: int = 256,
    data: PoetryData | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by ``train`` and evaluate it, fully autoregressive, on its saved split.

    Args:
        backend: run it on this backend (its attention weights converted exactly on load); None: the
            backend it was saved with.

    Returns:
        ``evaluate``'s dict plus 'checkpoint', 'backend', 'epoch'.
    """
    from ._checkpoint import load

    target = resolve_device(device)
    info = read_info(path)
    data = data if data is not None else data_for_checkpoint(path)
    model = load(path, backend=backend, device=target)
    result = evaluate(model, data, split, batch_size=batch_size, device=target)
    epoch = json.loads(info.metadata["epoch"]) if "epoch" in info.metadata else None
    return {"checkpoint": str(path), "backend": model.backend, "epoch": epoch, **result}
