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

from ._batches import Batcher
from ._checkpoint import read_info
from ._distributed import DistContext, all_reduce_sum
from ._errors import CheckpointError, ConfigError
from ._loss import reconstruction_loss
from ._metrics import nearest_words
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
    """Token-weighted metric sums on the device (no read until ``result``); counts known on the host."""

    def __init__(self, length: int, device: torch.device, vocabulary: Tensor | None) -> None:
        acc = torch.float32 if device.type == "mps" else torch.float64
        self.device = device
        self.scalars = torch.zeros(4, dtype=acc, device=device)  # loss x tokens, cosine, top-1, top-5
        self.position = torch.zeros(length, dtype=acc, device=device)
        self.position_count = torch.zeros(length, dtype=torch.long)
        self.tokens = 0
        self.word_tokens = 0
        self.vocabulary = F.normalize(vocabulary.float(), dim=-1, eps=1e-8) if vocabulary is not None else None

    def add(self, pred: Tensor, x: Tensor, mask: Tensor, lengths: Tensor, ids: Tensor, chosen: Tensor | None) -> None:
        T = mask.shape[1]
        tokens = int(lengths.sum())
        weight = mask.to(self.scalars.dtype)
        cos = F.cosine_similarity(pred.float(), x.float(), dim=-1, eps=1e-8).to(self.scalars.dtype) * weight
        self.scalars[0] += reconstruction_loss(pred.float(), x.float(), mask).to(self.scalars.dtype) * tokens
        self.scalars[1] += cos.sum()
        self.position[:T] += cos.sum(dim=0)
        self.position_count[:T] += (torch.arange(T)[None, :] < lengths[:, None]).sum(dim=0)
        self.tokens += tokens
        if self.vocabulary is not None and chosen is not None:
            where = torch.nonzero(chosen.flatten()).squeeze(1)  # host: positions in the (B, T) batch
            if len(where):
                picked = where.to(self.device, non_blocking=True)
                top = nearest_words(pred.reshape(-1, pred.shape[-1])[picked], self.vocabulary, k=5)
                truth = ids.reshape(-1)[where].to(self.device, non_blocking=True)[:, None]
                self.scalars[2] += (top[:, :1] == truth).sum()
                self.scalars[3] += (top == truth).any(dim=1).sum()
                self.word_tokens += len(where)

    def result(self, dist: DistContext | None) -> dict[str, Any]:
        values = self.scalars.tolist()
        positions = self.position.tolist()
        counts = [float(c) for c in self.position_count.tolist()]
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
        'per_position_cosine', 'teacher_forcing', 'seconds', 'seq_per_s'}; 'seconds' is the decode and
        metric loop, device-synchronised.
    """
    if split not in data.windows:
        raise ConfigError(f"unknown split {split!r}; splits: {', '.join(data.windows)}")
    windows = data.windows[split]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    table = torch.from_numpy(data.embeddings.vectors).to(device)
    sums = _Sums(windows.ids.shape[1], device, table if words else None)
    sample = _word_sample(windows.mask, word_sample, data.seed) if words else None
    rows = torch.arange(len(windows))
    if dist is not None and dist.is_distributed:
        rows = rows[dist.rank :: dist.world_size]
    static = device.type == "cuda"
    batcher = Batcher(windows.ids, windows.lengths, table, batch_size=batch_size, static=static)
    was_training = model.training
    if step is None and teacher_forcing == 0.0:
        step = InferenceStep(model, cuda_graph=static, warmup=1, precision=precision)  # splits are a few batches
    model.eval()
    tick = time.perf_counter()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = batcher(chunk)
            if step is not None and teacher_forcing == 0.0:
                pred = step.run(batch)
            else:
                with torch.no_grad(), autocast(device, precision):
                    pred = model(batch.x, batch.mask, teacher_forcing=teacher_forcing).reconstruction.float()
            T = batch.mask.shape[1]
            lengths = torch.cat([windows.lengths[chunk], windows.lengths.new_zeros(batch.mask.shape[0] - len(chunk))])
            ids = torch.cat([windows.ids[chunk, :T], windows.ids.new_zeros(batch.mask.shape[0] - len(chunk), T)])
            chosen = None
            if sample is not None:
                chosen = torch.cat([sample[chunk, :T], sample.new_zeros(batch.mask.shape[0] - len(chunk), T)])
            sums.add(pred, batch.x, batch.mask, lengths, ids, chosen)
        synchronize(device)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - tick
    result = sums.result(dist)
    return {
        "split": split,
        "windows": len(windows),
        **{k: result[k] for k in ("tokens", "loss", "cosine", "word_top1", "word_top5")},
        "word_tokens": result["word_tokens"] if words else 0,
        "per_position_cosine": result["per_position_cosine"],
        "teacher_forcing": teacher_forcing,
        "seconds": seconds,
        "seq_per_s": len(rows) / max(seconds, 1e-9),
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
