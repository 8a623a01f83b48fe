"""Training samplers: a DomainBed-style infinite stream per source domain, seen in epoch windows,
all source domains through ONE loader, resumable mid-epoch.

DomainBed draws every domain's training batches from an infinite loader, so no domain's loader
ever restarts when that domain runs out. `DomainStreamSampler` is one domain's seeded stream: the
concatenation of passes over its `in` split, pass `k` being `randperm(n)` under the seed
`(seed, k)`; the stream is cut into batches, and under DDP batch `g` of the stream goes to rank
`g % world_size` (no image twice within a pass, no padding). Its position is a pure function of
(seed, step, rank, world size):

- an *epoch* is a window of `steps_per_epoch` batches of the stream, the same number for every
  domain (the DataModule uses the largest source domain's `in` split / (`batch_size_per_domain`
  x processes), so one epoch shows the largest domain about once and the smaller ones more
  often; no domain restarts within it);
- epoch `e` is the window `[e * steps_per_epoch, (e + 1) * steps_per_epoch)` of this rank's
  batches, whatever happened before.

`SourceStreamSampler` interleaves the source domains' streams into one sampler for one
DataLoader: step `s` is `batch_size` samples of domain 0's stream at step `s`, then domain 1's,
and so on (with `batch_size x domains` as the loader's batch size), so a rank's loader has
`num_workers` worker processes whatever the number of domains, and every step holds exactly the
images the per-domain streams give it. Each sample is `(domain index, index in that domain's
dataset, key)`: `key` seeds the sample's random augmentation (`SourceDomains`), so an image's
augmentation depends on its place in the stream only, not on which worker read it or when.

`StreamLoader` is the DataLoader over it, with `state_dict` / `load_state_dict` (Lightning saves
them in every checkpoint, `loops` / `combined_loader`): the stream step of the next batch the
training loop would take. Resumed from a checkpoint written mid-epoch (a `last.ckpt` written at
`val_check_interval`, a SLURM requeue's `hpc_ckpt_N.ckpt`), the loader continues from that step,
so the resumed run sees exactly the batches, and augmentations, an uninterrupted run would.

The samplers are `DistributedSampler` subclasses, so Lightning uses them as they are under DDP
(it replaces any other sampler by a `DistributedSampler`, which would shard it a second time).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dg_heads.data.table import collate_skipping

log = logging.getLogger("dg_heads.data")


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
        self._cached, self._order = -1, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def step_positions(self, step: int) -> range:
        """Stream positions of this rank's batch at (this rank's) stream step `step`."""
        start = (step * self.num_replicas + self.rank) * self.batch_size
        return range(start, start + self.batch_size)

    def positions(self, epoch: int) -> Iterator[int]:
        """Stream positions of this rank's samples in epoch `epoch`."""
        first = epoch * self.steps_per_epoch
        for step in range(first, first + self.steps_per_epoch):
            yield from self.step_positions(step)

    def index(self, position: int) -> int:
        """The dataset index at stream position `position`."""
        index, offset = divmod(position, self.num_samples)
        if index != self._cached:
            self._cached, self._order = index, _pass_order(self.num_samples, self.seed, index)
        return self._order[offset]

    def __iter__(self) -> Iterator[int]:
        for position in self.positions(self.epoch):
            yield self.index(position)


class SourceStreamSampler(DistributedSampler):
    """Every source domain's stream through one sampler: per step, `batch_size` samples of each
    domain in turn, as `(domain index, dataset index, augmentation key)`; from an epoch's first
    step, or from the step `resume_at` sets (once)."""

    def __init__(self, sizes: Sequence[int], seeds: Sequence[int], batch_size: int, steps_per_epoch: int,
                 rank: int = 0, world_size: int = 1, augment_seed: int = 0) -> None:
        Sampler.__init__(self)
        if len(sizes) != len(seeds) or not sizes:
            raise ValueError(f"one seed per domain and at least one domain: {sizes}, {seeds}")
        self.streams = [DomainStreamSampler(n, s, batch_size, steps_per_epoch, rank, world_size)
                        for n, s in zip(sizes, seeds)]
        self.seeds, self.augment_seed = list(seeds), augment_seed
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.rank, self.num_replicas = rank, world_size
        self.epoch, self.shuffle, self.drop_last = 0, True, True
        self.total_size = steps_per_epoch * batch_size * len(sizes) * world_size
        self.start: int | None = None  # the stream step the current iteration began at, once it has
        self._resume_at: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, step: int) -> None:
        """Make the next iteration start at this rank's stream step `step` (and end with its epoch)."""
        self._resume_at = step

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size * len(self.streams)

    def key(self, domain: int, position: int) -> int:
        """The augmentation seed of a domain's stream position (below 2**63)."""
        return ((self.augment_seed * 1_000_003 + self.seeds[domain]) * 1_000_000_007 + position) % 2 ** 63

    def step(self, step: int) -> list[tuple[int, int, int]]:
        """The samples of stream step `step`: every domain's batch, in domain order."""
        return [(d, stream.index(p), self.key(d, p))
                for d, stream in enumerate(self.streams) for p in stream.step_positions(step)]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        if self._resume_at is not None:  # from where the checkpoint left off, to the end of that epoch
            self.start, self._resume_at = self._resume_at, None
            return self._steps(self.start)
        self.start = None
        return self._epoch()

    def _epoch(self) -> Iterator[tuple[int, int, int]]:
        self.start = self.epoch * self.steps_per_epoch  # read at the first `next`, after `set_epoch`
        yield from self._steps(self.start)

    def _steps(self, start: int) -> Iterator[tuple[int, int, int]]:
        end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        for step in range(start, end):
            yield from self.step(step)


class SourceDomains(Dataset):
    """The source domains' training sets as one dataset indexed by `SourceStreamSampler`'s
    `(domain, index, key)`: the sample (or None, skipped) with its domain index; the random
    augmentation runs under `key` (torch's and Python's generators, restored afterwards)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item: tuple[int, int, int]):
        domain, index, key = item
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key)  # not `torch.manual_seed`: it would reseed CUDA's too
            random.seed(key)
            sample = self.datasets[domain][index]
        random.setstate(state)
        return None if sample is None else (*sample, domain)


class CollateDomains:
    """A `SourceDomains` batch as `{domain name: (images, labels)}`, every domain present, in
    order (an unreadable image skipped leaves its domain one image short)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def __call__(self, samples: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        by_domain: list[list] = [[] for _ in self.names]
        for sample in samples:
            if sample is not None:
                by_domain[sample[-1]].append(sample[:-1])
        return {name: collate_skipping(kept) if kept else _empty() for name, kept in zip(self.names, by_domain)}


def _empty() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long)


class ResumableLoader(DataLoader):
    """A training DataLoader that resumes mid-epoch: its iterator starts at its first `next`
    (`StartsAtFirstNext`), where `position()` (the trainer's counters: epoch, batches of it already
    trained) is handed to `start_at`, which each kind of loader implements."""

    def __init__(self, *args, position: Callable[[], tuple[int, int] | None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self):
        return StartsAtFirstNext(self)

    def start_at(self, epoch: int, done: int) -> None:
        raise NotImplementedError


class StreamLoader(ResumableLoader):
    """The training DataLoader over a `SourceStreamSampler`, resumable mid-epoch.

    Its iterator starts at its first `next` (not at `iter`), at the stream step that `position`
    gives then: `(epoch, batches of that epoch already trained)`, read from the trainer's own
    progress counters, so after a resume (from a checkpoint written at any batch, or by a SLURM
    requeue signal in the middle of a step) the loader hands out exactly the batch Lightning
    counts as the next one. Without `position` (no trainer), an iteration is the epoch set by
    `set_epoch`, or continues from a loaded `state_dict`. `state_dict` (saved by Lightning in
    every checkpoint) is the stream step after the last batch handed out and how the stream is
    cut; `load_state_dict` warns when this run cuts it differently (batch size, domains, processes):
    such a run continues, but not as the uninterrupted run would have."""

    def start_at(self, epoch: int, done: int) -> None:
        """The next iteration starts at batch `done` of `epoch` (the trainer's counters)."""
        self.sampler.resume_at(epoch * self.sampler.steps_per_epoch + done)

    def _layout(self) -> dict:
        sampler = self.sampler
        return {"steps_per_epoch": sampler.steps_per_epoch, "world_size": sampler.num_replicas,
                "batch_size": sampler.batch_size, "domains": len(sampler.streams)}

    def state_dict(self) -> dict:
        sampler, live = self.sampler, getattr(self, "_live", None)
        if sampler._resume_at is not None:  # loaded, not started yet
            step = sampler._resume_at
        elif live is None or sampler.start is None:
            step = sampler.epoch * sampler.steps_per_epoch
        else:
            step = sampler.start + live._num_yielded
        return {"step": step, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        saved = {k: state.get(k) for k in self._layout()}
        if saved != self._layout():
            log.warning("resuming a run whose training stream was cut as %s with one cut as %s (batch size, "
                        "source domains or processes changed): it continues, but not as the first run would have",
                        saved, self._layout())
            return
        self.sampler.resume_at(int(state["step"]))


class StartsAtFirstNext:
    """The iterator of a loader that resumes mid-epoch (`StreamLoader`, the retrieval training
    loader): its DataLoader iterator (and workers' first indices) start at the first `next`, where
    the trainer's counters already say which batch comes next (`loader.position()`, then
    `loader.start_at(epoch, done)`)."""

    def __init__(self, loader: StreamLoader) -> None:
        self.loader, self.iterator = loader, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            loader = self.loader
            where = loader.position() if loader.position is not None else None
            if where is not None:
                loader.start_at(*where)
            self.iterator = loader._live = DataLoader.__iter__(loader)
        return next(self.iterator)


def trainer_position(trainer) -> tuple[int, int] | None:
    """(epoch, batches of it already trained) by the trainer's counters, where a resumable training
    loader's next batch must come from; None without a trainer."""
    progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
    if progress is None:
        return None
    return trainer.current_epoch, progress.current.ready


def steps_per_epoch(sizes: list[int], batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch: the largest domain's samples / (batch size x processes), at least 1."""
    return max(1, max(sizes) // (batch_size * world_size))
