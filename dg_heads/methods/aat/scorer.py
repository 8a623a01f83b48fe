"""Choosing heads to ablate without training: a single-head scan and a genetic algorithm.

Both score masks with a `MaskScorer`, which caches the input of every block for the scoring
data (one full pass) and evaluates a mask from the input of its first ablated block onwards,
and remembers the score of every mask it has seen. `cost` counts block forwards in units of
one full scoring pass (every block over every scoring image), so savings are measurable.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from dg_heads import heads
from dg_heads.errors import DGHeadsError
from dg_heads.heads import staged

Mask = frozenset  # of (block, head) pairs


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
    scores: dict[Mask, float] = field(default_factory=dict)
    block_forwards: int = 0  # images x blocks actually run (the cost, this process's share)
    evaluations: int = 0  # masks asked for, cached or not
    total_images: int = 0  # scoring images over every process, known after the first score

    @property
    def num_blocks(self) -> int:
        return len(self.model.visual.transformer.resblocks)

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
        visual = self.model.visual
        with self.autocast():
            inputs = [staged.embed(visual, images)]
            for block in visual.transformer.resblocks:
                inputs.append(block(inputs[-1]))
        self.batches.append(ScoringBatch(domain, labels, inputs))
        self.block_forwards += len(labels) * self.num_blocks

    @torch.no_grad()
    def counts(self, mask: Mask) -> torch.Tensor:
        """[2, domains]: right answers and images per domain under `mask`, summed over processes."""
        start = min((b for b, _ in mask), default=self.num_blocks)
        as_dict: dict[int, list[int]] = {}
        for block, head_index in mask:
            as_dict.setdefault(block, []).append(head_index)
        heads.ablate(self.model, as_dict, mode=self.mode, alpha=self.alpha)
        device = next(self.model.parameters()).device
        totals = torch.zeros(2, self.num_domains, dtype=torch.float64, device=device)
        try:
            with self.autocast():
                for batch in self.batches:
                    tokens = staged.run_blocks(self.model.visual, batch.block_inputs[start], start)
                    logits = self.classify(staged.head(self.model.visual, tokens))
                    totals[0, batch.domain] += (logits.argmax(-1) == batch.labels).sum()
                    totals[1, batch.domain] += len(batch.labels)
                    self.block_forwards += len(batch.labels) * (self.num_blocks - start)
        finally:
            heads.clear_ablation(self.model)
        return self.reduce(totals)

    def score(self, mask: Mask) -> float:
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


def scan(scorer: MaskScorer, shape: tuple[int, int], progress: bool = True) -> torch.Tensor:
    """Score gain of ablating each head alone ([blocks, heads]; > 0: the head hurts)."""
    base = scorer.score(Mask())
    gains = torch.zeros(shape)
    pairs = [(b, h) for b in range(shape[0]) for h in range(shape[1])]
    for block, head_index in tqdm(pairs, desc="scan", disable=not progress, unit="head"):
        gains[block, head_index] = scorer.score(Mask({(block, head_index)})) - base
    return gains


@dataclass
class GASpec:
    population: int = 24
    generations: int = 15
    mutation_rate: float = 0.02  # per head and child
    crossover_rate: float = 0.9
    elitism: int = 2
    tournament: int = 3
    init_density: float = 0.03  # share of heads ablated in the random initial masks
    seed: int = 0

    def check(self) -> None:
        if self.population < 2:
            raise DGHeadsError(f"search.ga.population must be >= 2, got {self.population}")
        if not 0 <= self.elitism < self.population:
            raise DGHeadsError(f"search.ga.elitism must be in [0, population), got {self.elitism}")
        for name in ("mutation_rate", "crossover_rate", "init_density"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DGHeadsError(f"search.ga.{name} must be in [0, 1], got {value}")
        if self.generations < 1 or self.tournament < 1:
            raise DGHeadsError("search.ga.generations and search.ga.tournament must be >= 1")


def _to_mask(bits: torch.Tensor) -> Mask:
    return Mask((int(b), int(h)) for b, h in torch.nonzero(bits).tolist())


def genetic_search(scorer: MaskScorer, shape: tuple[int, int], spec: GASpec, progress: bool = True,
                   on_generation: Callable[[int, float, float], None] | None = None):
    """A seeded GA over binary head masks; fitness = source accuracy. Returns (best mask, history)."""
    spec.check()
    g = torch.Generator().manual_seed(spec.seed)
    population = (torch.rand((spec.population, *shape), generator=g) < spec.init_density)
    population[0] = False  # the unablated model is always a candidate
    history = []
    for generation in tqdm(range(spec.generations), desc="ga", disable=not progress, unit="gen"):
        fitness = torch.tensor([scorer.score(_to_mask(p)) for p in population])
        order = torch.argsort(fitness, descending=True, stable=True)
        history.append({"generation": generation, "best": float(fitness.max()), "mean": float(fitness.mean()),
                        "best_heads": int(population[order[0]].sum())})
        if on_generation is not None:
            on_generation(generation, float(fitness.max()), float(fitness.mean()))
        children = [population[i].clone() for i in order[: spec.elitism]]
        while len(children) < spec.population:
            a, b = (population[_tournament(fitness, spec.tournament, g)] for _ in range(2))
            child = a.clone()
            if torch.rand(1, generator=g) < spec.crossover_rate:
                take = torch.rand(shape, generator=g) < 0.5
                child = torch.where(take, a, b)
            flip = torch.rand(shape, generator=g) < spec.mutation_rate
            children.append(child ^ flip)
        population = torch.stack(children)
    fitness = torch.tensor([scorer.score(_to_mask(p)) for p in population])
    best = population[int(torch.argmax(fitness))]
    return _to_mask(best), history


def _tournament(fitness: torch.Tensor, size: int, g: torch.Generator) -> int:
    picks = torch.randint(0, len(fitness), (size,), generator=g)
    return int(picks[torch.argmax(fitness[picks])])
