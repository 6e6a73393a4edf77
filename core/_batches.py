"""Batches at static shapes for the step engine: windows cut on the host, padded with empty rows and to a
few captured lengths (for CUDA graphs), copied to the device without a host sync."""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from ._mask import lengths_of


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
    ids: Tensor | None = None
    """(B, T) the words' indices into the embedding table (``Batcher`` batches; evaluation reads them)."""

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
        tokens = int(lengths.sum())
        return Batch(x=self.table[ids_d], mask=mask_d, tokens=tokens, rows=len(rows), weight=w, ids=ids_d)


def balanced_batch(count: int, batch_size: int, multiple: int = 1) -> int:
    """Rows per batch that cut ``count`` rows into as few batches as ``batch_size`` allows, of even sizes
    rounded up to ``multiple`` and never above ``batch_size``: 326 windows at 256 make two batches of 168
    (10 empty rows) instead of 256 and 70 padded to 256 (186 empty rows)."""
    batches = max(1, -(-count // batch_size))
    size = max(1, -(-count // batches))
    return min(batch_size, -(-size // multiple) * multiple)


class SplitBatches:
    """One split's batches in order, for evaluation: the windows' ids and mask are put on the device once,
    so each batch is a slice (no host work, no copy, no sync per batch) and a gather from the table.

    The split is cut evenly (``balanced_batch``): as few batches as ``batch_size`` allows, of equal size,
    so a static split pads few empty rows.

    Args:
        ids, lengths: the split's windows (N, max_len) and lengths (N,), on the host.
        rows: which windows, in order (a distributed rank's share; default all).
        table: (V, E) embedding vectors on the device.
        batch_size: the most rows per batch.
        static: pad the last batch with empty rows and every window to ``max_len`` (one captured shape;
            the rows per batch rounded up to a multiple of 8); otherwise trim each batch to its longest
            window.
    """

    def __init__(
        self, ids: Tensor, lengths: Tensor, table: Tensor, *, batch_size: int, static: bool, rows: Tensor | None = None
    ) -> None:
        if rows is not None:
            ids, lengths = ids[rows], lengths[rows]
        self.count, self.static, self.table = len(lengths), static, table
        self.batch_size = balanced_batch(self.count, batch_size, 8 if static else 1)
        self.lengths = lengths.long()
        total = -(-self.count // self.batch_size) * self.batch_size if static else self.count
        padded = torch.zeros(total, ids.shape[1], dtype=torch.int32)
        padded[: self.count] = ids
        full = torch.cat([self.lengths, self.lengths.new_zeros(total - self.count)])
        self.mask_host = torch.arange(ids.shape[1])[None, :] < full[:, None]
        self.ids = padded.to(table.device)
        self.mask = self.mask_host.to(table.device)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def span(self, i: int) -> tuple[int, int, int]:
        """(first row, rows run, length) of batch ``i`` (rows include the empty ones of a static batch)."""
        first = i * self.batch_size
        real = self.lengths[first : first + self.batch_size]
        run = self.batch_size if self.static else len(real)
        return first, run, self.ids.shape[1] if self.static else max(1, int(real.max()))

    def __getitem__(self, i: int) -> Batch:
        if not 0 <= i < len(self):
            raise IndexError(i)
        first, run, T = self.span(i)
        ids = self.ids[first : first + run, :T]
        real = self.lengths[first : first + self.batch_size]
        return Batch(
            x=self.table[ids], mask=self.mask[first : first + run, :T], tokens=int(real.sum()), rows=len(real), ids=ids
        )
