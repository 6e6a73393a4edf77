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
from ._metrics import NeighbourRanks, word_ranks
from ._model import Autoencoder
from ._precision import autocast, require_precision, step_precision
from ._recipe import TrainConfig, prepare_data, resolve_device
from ._trainstep import InferenceStep, synchronize
from .data import PoetryData

SETTLE_ROWS = 2**16
"""Rows that the neighbour lists could not vouch for are searched in the whole vocabulary once this many
word positions wait (one host sync each time) or at the end of the split."""


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


class SplitEvaluator:
    """Metrics of ``model`` on one split, set up once and measured as often as asked: the split's batches,
    the word-search positions and the unit vocabulary are made here, not at every call (the trainer
    validates through one of these each epoch). Every sum of a call stays on the device until its end.

    The arguments are ``evaluate``'s, and ``neighbours``: the length of each word's neighbour list
    (``NeighbourRanks``; 0 searches every word through the whole vocabulary).

    The word search (each measured token's rank among the vocabulary) runs in two tiers: ``NeighbourRanks``
    searches each prediction's nearest words of its true word, exact wherever the prediction is close
    enough to its word for that to suffice, and the rows it cannot vouch for are searched through the
    whole vocabulary in one go at the end (``word_full_search`` counts them). It runs on the decode's
    stream: on a second stream it did not overlap the next batch's replay on the H200
    (benchmarks/h200-2026-12-02b/README.md, run 5).
    """

    def __init__(
        self,
        model: Autoencoder,
        data: PoetryData,
        split: str = "test",
        *,
        batch_size: int = 256,
        words: bool = True,
        word_sample: int = 0,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        dist: DistContext | None = None,
        step: InferenceStep | None = None,
        neighbours: int = 64,
    ) -> None:
        if split not in data.windows:
            raise ConfigError(f"unknown split {split!r}; splits: {', '.join(data.windows)}")
        windows = data.windows[split]
        self.model, self.split, self.windows, self.precision, self.dist = model, split, len(windows), precision, dist
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        table = torch.from_numpy(data.embeddings.vectors).to(self.device)
        rows = None
        if dist is not None and dist.is_distributed:
            rows = torch.arange(len(windows))[dist.rank :: dist.world_size]
        static = self.device.type == "cuda"
        self.batches = SplitBatches(
            windows.ids, windows.lengths, table, batch_size=batch_size, static=static, rows=rows
        )
        was_training = model.training
        self.step = step or InferenceStep(model, cuda_graph=static, warmup=1, precision=precision)
        model.train(was_training)  # InferenceStep switches it to eval mode; each call restores the mode
        self.position_count = [float(c) for c in self.batches.mask_host.sum(dim=0).tolist()]
        self.tokens = int(self.batches.lengths.sum())
        self.vocabulary = F.normalize(table.float(), dim=-1, eps=1e-8) if words else None
        self.where: list[Tensor] = []  # per batch: its word-search positions, flat in (rows x length)
        sample = torch.zeros_like(windows.mask)
        if words:
            sample = _word_sample(windows.mask, word_sample, data.seed)
            chosen = torch.zeros_like(self.batches.mask_host)
            chosen[: self.batches.count] = sample[rows] if rows is not None else sample
            for i in range(len(self.batches)):
                first, run, T = self.batches.span(i)
                self.where.append(torch.nonzero(chosen[first : first + run, :T].flatten()).squeeze(1))
            sizes = [len(w) for w in self.where]
            offsets = torch.cumsum(torch.tensor([0, *sizes]), 0).tolist()
            joined = torch.cat(self.where).to(self.device)  # one copy for the whole split
            self.where = [joined[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]
        self.word_tokens = sum(len(w) for w in self.where)
        self.ranker: NeighbourRanks | None = None
        self._word_setup = 0.0  # the neighbour lists' search, counted in the first call's setup
        if self.vocabulary is not None and self.word_tokens:
            tick = time.perf_counter()
            # the whole sample's words (in a distributed job a superset of this rank's)
            words_measured = windows.ids[sample].to(self.device)
            self.ranker = NeighbourRanks(self.vocabulary, words_measured, neighbours=neighbours)
            synchronize(self.device)
            self._word_setup = time.perf_counter() - tick
        self._unsettled: list[tuple[Tensor, Tensor, Tensor]] = []  # rows the lists could not vouch for

    def __call__(self, teacher_forcing: float = 0.0) -> dict[str, Any]:
        """The split's metrics now (``evaluate``'s dict)."""
        acc = torch.float32 if self.device.type == "mps" else torch.float64
        # loss x tokens, cosine, top-1, top-5, words searched through the whole vocabulary
        scalars = torch.zeros(5, dtype=acc, device=self.device)
        position = torch.zeros(self.batches.mask.shape[1], dtype=acc, device=self.device)
        was_training = self.model.training
        self.model.eval()
        setup, self._word_setup = self._word_setup, 0.0
        try:
            if teacher_forcing == 0.0 and len(self.batches):
                tick = time.perf_counter()
                if self.step.prepare(self.batches[0]):
                    synchronize(self.device)
                    setup += time.perf_counter() - tick
            tick = time.perf_counter()
            for i in range(len(self.batches)):
                batch = self.batches[i]
                if teacher_forcing == 0.0:
                    pred = self.step.run(batch)
                else:
                    with torch.no_grad(), step_precision(self.precision), autocast(self.device, self.precision):
                        pred = self.model(batch.x, batch.mask, teacher_forcing=teacher_forcing).reconstruction.float()
                self._add(scalars, position, i, pred, batch)
            self._settle(scalars)
            head = [float(self.tokens), float(self.word_tokens), *scalars.tolist()]  # reads the device once
            positions, counts = position.tolist(), self.position_count
            seconds = time.perf_counter() - tick
        finally:
            self.model.train(was_training)
        if self.dist is not None and self.dist.is_distributed:
            head, positions, counts = (all_reduce_sum(self.dist, v) for v in (head, positions, counts))
        tokens, word_tokens, loss, cosine, top1, top5, searched = head
        keep = max((i + 1 for i, c in enumerate(counts) if c), default=0)
        words = self.vocabulary is not None
        return {
            "split": self.split,
            "windows": self.windows,
            "tokens": int(tokens),
            "loss": loss / max(tokens, 1.0),
            "cosine": cosine / max(tokens, 1.0),
            "word_top1": top1 / max(word_tokens, 1.0) if words else None,
            "word_top5": top5 / max(word_tokens, 1.0) if words else None,
            "word_tokens": int(word_tokens),
            "word_full_search": int(searched),
            "per_position_cosine": [round(s / c, 6) if c else None for s, c in zip(positions, counts, strict=True)][
                :keep
            ],
            "teacher_forcing": teacher_forcing,
            "setup_seconds": setup,
            "seconds": seconds,
            "seq_per_s": self.batches.count / max(seconds, 1e-9),
        }

    def _add(self, scalars: Tensor, position: Tensor, i: int, pred: Tensor, batch: Batch) -> None:
        T = batch.mask.shape[1]
        weight = batch.mask.to(scalars.dtype)
        cos = F.cosine_similarity(pred.float(), batch.x.float(), dim=-1, eps=1e-8).to(scalars.dtype) * weight
        scalars[0] += reconstruction_loss(pred.float(), batch.x.float(), batch.mask).to(scalars.dtype) * batch.tokens
        scalars[1] += cos.sum()
        position[:T] += cos.sum(dim=0)
        if self.vocabulary is not None and len(self.where[i]) and batch.ids is not None:
            where = self.where[i]
            flat = pred.reshape(-1, pred.shape[-1]).index_select(0, where)
            truth = batch.ids.reshape(-1).index_select(0, where)
            assert self.ranker is not None
            ranks, covered = self.ranker(flat, truth)
            scalars[2] += ((ranks == 0) & covered).sum()
            scalars[3] += ((ranks < 5) & covered).sum()
            self._unsettled.append((flat, truth, covered))
            if sum(len(t) for _, t, _ in self._unsettled) >= SETTLE_ROWS:
                self._settle(scalars)

    def _settle(self, scalars: Tensor) -> None:
        """Rank the rows the neighbour lists did not cover against the whole vocabulary (one host sync)."""
        if not self._unsettled or self.vocabulary is None:
            return
        flat, truth, covered = (torch.cat(parts) for parts in zip(*self._unsettled, strict=True))
        self._unsettled.clear()
        rows = torch.nonzero(~covered).squeeze(1)
        if len(rows):
            ranks = word_ranks(flat.index_select(0, rows), self.vocabulary, truth.index_select(0, rows))
            scalars[2] += (ranks == 0).sum()
            scalars[3] += (ranks < 5).sum()
            scalars[4] += len(rows)


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
    """Metrics of ``model`` on one split of ``data``, fully autoregressive by default (one
    ``SplitEvaluator`` call; build the evaluator to measure a split repeatedly).

    Args:
        model: the autoencoder (its mode is restored afterwards).
        data: the windows and embeddings.
        split: 'train', 'val' or 'test'.
        batch_size: the most windows per forward pass (the split is cut into as few batches as that
            allows, of even sizes; on CUDA the last one is padded with empty rows).
        teacher_forcing: 0.0 (default) decodes through the engine's ``InferenceStep``; above 0 the
            forward runs eagerly with that teacher forcing.
        words: also measure nearest-word top-1/top-5 against the whole embedding vocabulary.
        word_sample: measure word accuracy on this many tokens only (a fixed sample; 0 = all).
        device: where to run (default: the model's device).
        precision: 'fp32', 'tf32' (CUDA only) or 'bf16' autocast (``quatrain._precision``).
        dist: in a distributed job, each rank measures every world_size-th window and the sums are
            reduced, so every rank returns the whole split's metrics.
        step: an ``InferenceStep`` of ``model`` to decode with (default: a new one, capturing CUDA graphs
            on CUDA).

    Returns:
        {'split', 'windows', 'tokens', 'loss', 'cosine', 'word_top1', 'word_top5', 'word_tokens',
        'word_full_search', 'per_position_cosine', 'teacher_forcing', 'setup_seconds', 'seconds',
        'seq_per_s'}: 'word_full_search' is how many measured tokens were too far from their words for the
        neighbour lists and were ranked against the whole vocabulary; 'setup_seconds' the work done once
        before the first batch: the word search's neighbour lists and the step's warm-up and CUDA-graph
        capture (0 off CUDA without words); 'seconds' the decode and metric loop after it,
        device-synchronised; 'seq_per_s' this rank's windows over 'seconds'.
    """
    evaluator = SplitEvaluator(
        model, data, split, batch_size=batch_size, words=words, word_sample=word_sample, device=device,
        precision=precision, dist=dist, step=step,
    )  # fmt: skip
    return evaluator(teacher_forcing)


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
    precision: str = "fp32",
) -> dict[str, Any]:
    """Load a checkpoint written by ``train`` and evaluate it, fully autoregressive, on its saved split.

    Args:
        backend: run it on this backend (its attention weights converted exactly on load); None: the
            backend it was saved with.
        precision: 'fp32', 'tf32' or 'bf16', as ``evaluate`` (and ``quatrain train --precision``) runs it.

    Returns:
        ``evaluate``'s dict plus 'checkpoint', 'backend', 'epoch', 'precision'.

    Raises:
        ConfigError: this machine cannot run ``precision`` (checked before the data is read).
    """
    from ._checkpoint import load

    target = resolve_device(device)
    info = read_info(path)
    require_precision(precision, target, info.config.rnn)
    data = data if data is not None else data_for_checkpoint(path)
    model = load(path, backend=backend, device=target)
    result = evaluate(model, data, split, batch_size=batch_size, device=target, precision=precision)
    epoch = json.loads(info.metadata["epoch"]) if "epoch" in info.metadata else None
    return {"checkpoint": str(path), "backend": model.backend, "epoch": epoch, "precision": precision, **result}
