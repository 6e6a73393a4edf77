"""Windows at scale: the per-epoch seeded sampler that gives each rank a disjoint shard."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import torch
from torch import Tensor

from ._errors import DataError


@attrs.frozen
class EpochSampler:
    """A seeded permutation of ``num_items`` per epoch, dealt to ``world_size`` ranks.

    Every rank computes the same permutation (from ``seed`` and the epoch, so a resumed run draws the same
    one), pads it with its own head to a multiple of ``world_size`` (every rank takes the same number of
    steps, as DistributedDataParallel needs) and keeps positions ``rank, rank + world_size, ...``.

    Step ``s`` of a rank with per-rank batch ``b`` therefore holds its share of positions
    ``[s*b*W, (s+1)*b*W)`` of the permutation: the ranks' batches at one step together are exactly the
    batch of ``b*W`` a single process takes at that step (tests/core/test_distributed.py checks the
    resulting parameters).
    """

    num_items: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __attrs_post_init__(self) -> None:
        if self.num_items <= 0:
            raise DataError(f"nothing to sample: {self.num_items} windows")
        if not 0 <= self.rank < self.world_size:
            raise DataError(f"rank {self.rank} is outside world size {self.world_size}")

    @property
    def per_rank(self) -> int:
        """Items each rank sees per epoch (the padded permutation's length / world_size)."""
        return -(-self.num_items // self.world_size)

    def steps(self, batch_size: int) -> int:
        """Optimiser steps per epoch on every rank."""
        return -(-self.per_rank // batch_size)

    def order(self, epoch: int) -> Tensor:
        """The epoch's whole permutation, padded to ``per_rank * world_size`` items."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_items, generator=generator)
        pad = self.per_rank * self.world_size - self.num_items
        if pad:
            perm = torch.cat([perm, perm[:pad]])
        return perm

    def indices(self, epoch: int) -> Tensor:
        """This rank's shard of the epoch: disjoint from the others' (but for the padding)."""
        return self.order(epoch)[self.rank :: self.world_size]

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(this rank's rows, all ranks' rows) of each step of ``epoch``."""
        order = self.order(epoch)
        step = batch_size * self.world_size
        for first in range(0, len(order), step):
            together = order[first : first + step]
            yield together[self.rank :: self.world_size], together
