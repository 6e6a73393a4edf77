"""Batches at static shapes for the step engine: windows cut on the host, padded with empty rows and to a
few captured lengths (for CUDA graphs), copied to the device without a host sync."""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from ._model import lengths_of


@attrs.frozen
class Batch:
    """One step's inputs on the device; ``tokens`` and ``rows`` (real ones, pads excluded) known on the host."""

    x: Tensor
    """(B, T, E) word vectors."""
    mask: Tensor
    """(B, T) bool, left-aligned (built from lengths, so never checked again)."""
    tokens: int
    rows: int
    weight: Tensor | None = None
    """0-d factor of this rank's loss in a distributed job (its share of the step's tokens)."""

    @classmethod
    def of(cls, x: Tensor, mask: Tensor) -> Batch:
        """A batch from tensors a caller made: the mask is checked once here (reading it syncs on CUDA)."""
        lengths = lengths_of(mask)
        return cls(x=x, mask=mask, tokens=int(lengths.sum()), rows=int((lengths > 0).sum()))


def bucket_lengths(max_len: int, buckets: int) -> tuple[int, ...]:
    """``buckets`` lengths spaced evenly up to ``max_len`` (1: pad every window to ``max_len``)."""
    buckets = max(1, min(buckets, max_len))
    return tuple(sorted({-(-max_len * (i + 1) // buckets) for i in range(buckets)}))


class Batcher:
    """Cuts windows into batches on the device: ids and mask made on the host, copied without a sync,
    word vectors gathered from the embedding table on the device.

    Args:
        ids, lengths: the windows (N, max_len) and their lengths (N,), on the host.
        table: (V, E) embedding vectors on the training device.
        batch_size: rows per step.
        static: pad every batch to ``batch_size`` rows and to one of ``lengths`` (for CUDA graphs);
            otherwise trim each batch to its longest window (the cheapest eager shape).
        lengths: the captured lengths (default: ``max_len`` only).
    """

    def __init__(
        self,
        ids: Tensor,
        lengths: Tensor,
        table: Tensor,
        *,
        batch_size: int,
        static: bool,
        buckets: tuple[int, ...] | None = None,
    ) -> None:
        self.ids, self.lengths, self.table = ids, lengths, table
        self.batch_size, self.static = batch_size, static
        self.buckets = buckets or (int(ids.shape[1]),)
        self.device = table.device
        self._pin = self.device.type == "cuda"

    def _put(self, t: Tensor) -> Tensor:
        return t.pin_memory().to(self.device, non_blocking=True) if self._pin else t.to(self.device)

    def __call__(self, rows: Tensor, weight: float | None = None) -> Batch:
        lengths = self.lengths[rows].long()
        longest = int(lengths.max()) if len(rows) else 1
        T = next((b for b in self.buckets if b >= longest), longest) if self.static else longest
        ids = self.ids[rows, :T].long()
        if self.static and len(rows) < self.batch_size:  # empty rows: mask all False, zero loss weight
            pad = self.batch_size - len(rows)
            ids = torch.cat([ids, ids.new_zeros(pad, T)])
            lengths = torch.cat([lengths, lengths.new_zeros(pad)])
        mask = torch.arange(T)[None, :] < lengths[:, None]
        ids_d, mask_d = self._put(ids), self._put(mask)
        w = None if weight is None else self._put(torch.tensor(weight, dtype=torch.float32))
        return Batch(x=self.table[ids_d], mask=mask_d, tokens=int(lengths.sum()), rows=len(rows), weight=w)
