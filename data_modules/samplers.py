"""Training samplers: a DomainBed-style infinite stream per source domain, seen in epoch windows.

DomainBed draws every domain's training batches from an infinite loader, so no domain's loader
ever restarts when that domain runs out. `DomainStreamSampler` does the same with a seeded,
resumable order: a domain's stream is the concatenation of passes over its `in` split, pass `k`
being `randperm(n)` under the seed `(seed, k)`; the stream is cut into batches, and under DDP
batch `g` of the stream goes to rank `g % world_size` (no image twice within a pass, no
padding). The position in the stream is a pure function of (seed, epoch, rank, world size):

- an *epoch* is a window of `steps_per_epoch` batches of the stream, the same number for every
  domain (the DataModule uses the largest source domain's `in` split / (`batch_size_per_domain`
  x processes), so one epoch shows the largest domain about once and the smaller ones more
  often; no domain restarts within it);
- epoch `e` is the window `[e * steps_per_epoch, (e + 1) * steps_per_epoch)` of this rank's
  batches, whatever happened before, so a run resumed from an epoch-end checkpoint sees exactly
  the batches an uninterrupted run would have seen (Lightning calls `set_epoch`).

The sampler is a `DistributedSampler` subclass, so Lightning uses it as it is under DDP (it
wraps any other sampler in a `DistributedSamplerWrapper`, which would shard it a second time).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler, Sampler


def _pass_order(num_samples: int, seed: int, index: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return torch.randperm(num_samples, generator=generator).tolist()


class DomainStreamSampler(DistributedSampler):
    """Indices of one domain's infinite shuffled stream, one epoch window at a time, for one rank."""

    def __init__(self, num_samples: int, seed: int, batch_size: int, steps_per_epoch: int,
                 rank: int = 0, world_size: int = 1) -> None:
        Sampler.__init__(self)  # DistributedSampler's own __init__ wants a dataset and a process group
        if num_samples < 1 or batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"num_samples, batch_size, steps_per_epoch must be >= 1: "
                             f"{num_samples}, {batch_size}, {steps_per_epoch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.steps_per_epoch, self.rank, self.num_replicas = steps_per_epoch, rank, world_size
        self.epoch, self.shuffle, self.drop_last = 0, True, True
        self.total_size = steps_per_epoch * batch_size * world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def positions(self, epoch: int) -> Iterator[int]:
        """Stream positions of this rank's samples in epoch `epoch`."""
        b, world = self.batch_size, self.num_replicas
        first = epoch * self.steps_per_epoch
        for local in range(first, first + self.steps_per_epoch):
            start = (local * world + self.rank) * b
            yield from range(start, start + b)

    def __iter__(self) -> Iterator[int]:
        n, cached, order = self.num_samples, -1, []
        for position in self.positions(self.epoch):
            index, offset = divmod(position, n)
            if index != cached:
                cached, order = index, _pass_order(n, self.seed, index)
            yield order[offset]


def steps_per_epoch(sizes: list[int], batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch: the largest domain's samples / (batch size x processes), at least 1."""
    return max(1, max(sizes) // (batch_size * world_size))
