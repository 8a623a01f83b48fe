"""`MaskScorer`: the source accuracy of a frozen model under a head mask, with caches.

It caches the input of every block for the scoring data (one full pass) and evaluates a mask
from the input of its first ablated block onwards, and it remembers the score of every mask it
has seen. `cost` counts block forwards in units of one full scoring pass (every block over
every scoring image), so savings are measurable. It runs the tower through the head engine's
staged forward (`heads.embed` -> `heads.run_blocks` -> `heads.features`) only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from dg_heads import heads
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask


@dataclass
class ScoringBatch:
    domain: int
    labels: torch.Tensor
    block_inputs: list[torch.Tensor]  # input of every block (index L: output of the last)


def _no_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class MaskScorer:
    """Mean per-domain accuracy of the frozen model under a head mask, with caches.

    Precision and processes: `autocast` is the context every forward runs in (the trainer's
    precision, e.g. bf16 autocast), for filling the caches and for scoring alike, so the
    cached block inputs and the weights meet in the same dtype. Under DDP every process caches
    its own share of the scoring images and `reduce` sums each mask's per-domain counts over
    all of them, so every process gets the score of the whole set, the same on all: the same
    masks are then chosen everywhere, as with one process, in a share of the time."""

    model: torch.nn.Module
    classify: Callable[[torch.Tensor], torch.Tensor]  # image features -> logits
    mode: str = "zero"
    alpha: float = 0.0
    num_domains: int = 1
    autocast: Callable[[], AbstractContextManager] = nullcontext
    reduce: Callable[[torch.Tensor], torch.Tensor] = _no_reduce  # sum over processes
    batches: list[ScoringBatch] = field(default_factory=list)
    scores: dict[HeadMask, float] = field(default_factory=dict)
    block_forwards: int = 0  # images x blocks actually run (the cost, this process's share)
    evaluations: int = 0  # masks asked for, cached or not
    total_images: int = 0  # scoring images over every process, known after the first score

    @property
    def grid(self) -> tuple[int, int]:
        """(blocks, heads per block): the shape of every mask this scorer can score."""
        return heads.head_grid(self.model)

    @property
    def num_blocks(self) -> int:
        return self.grid[0]

    @property
    def num_images(self) -> int:
        """Scoring images held by this process."""
        return sum(len(b.labels) for b in self.batches)

    @property
    def cost(self) -> float:
        """Block forwards so far, in units of one full pass over the scoring data."""
        return self.block_forwards / max(1, self.num_blocks * self.num_images)

    @torch.no_grad()
    def add(self, images: torch.Tensor, labels: torch.Tensor, domain: int) -> None:
        """Cache every block's input for one batch (with no head ablated)."""
        if not 0 <= domain < self.num_domains:
            raise ValueError(f"domain index {domain} is outside [0, {self.num_domains})")
        heads.clear_ablation(self.model)
        num_blocks = self.num_blocks
        with self.autocast():
            inputs = [heads.embed(self.model, images)]
            for block in range(num_blocks):
                inputs.append(heads.run_blocks(self.model, inputs[-1], block, block + 1))
        self.batches.append(ScoringBatch(domain, labels, inputs))
        self.block_forwards += len(labels) * num_blocks

    @torch.no_grad()
    def counts(self, mask: HeadMask) -> torch.Tensor:
        """[2, domains]: right answers and images per domain under `mask`, summed over processes."""
        num_blocks = self.num_blocks
        start = mask.first_block(default=num_blocks)
        heads.ablate(self.model, mask, mode=self.mode, alpha=self.alpha)
        device = next(self.model.parameters()).device
        totals = torch.zeros(2, self.num_domains, dtype=torch.float64, device=device)
        try:
            with self.autocast():
                for batch in self.batches:
                    tokens = heads.run_blocks(self.model, batch.block_inputs[start], start)
                    logits = self.classify(heads.features(self.model, tokens))
                    totals[0, batch.domain] += (logits.argmax(-1) == batch.labels).sum()
                    totals[1, batch.domain] += len(batch.labels)
                    self.block_forwards += len(batch.labels) * (num_blocks - start)
        finally:
            heads.clear_ablation(self.model)
        return self.reduce(totals)

    def score(self, mask: HeadMask) -> float:
        self.evaluations += 1
        if mask in self.scores:
            return self.scores[mask]
        correct, count = self.counts(mask).cpu()
        self.total_images = int(count.sum())  # over every process
        if not bool((count > 0).any()):
            raise DGHeadsError("the scoring set is empty: no source validation images to score masks on")
        present = count > 0
        value = float((correct[present] / count[present]).mean())
        self.scores[mask] = value
        return value

    @property
    def all_equal(self) -> bool:
        """True when at least two masks were scored and all got the same score: ablation
        changes nothing this scorer can see (e.g. a randomly initialised backbone)."""
        return len(self.scores) > 1 and len(set(self.scores.values())) == 1
