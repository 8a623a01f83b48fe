"""A seeded genetic algorithm over binary head masks (fitness: the scorer's source accuracy).

The unablated model is in the first population, and elitism keeps the best masks, so the best
fitness never falls; repeated masks come from the scorer's fitness cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask
from dg_heads.methods.aat.scorer import MaskScorer


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


def genetic_search(scorer: MaskScorer, spec: GASpec, progress: bool = True,
                   on_generation: Callable[[int, float, float], None] | None = None
                   ) -> tuple[HeadMask, list[dict]]:
    """A seeded GA over binary head masks; fitness = source accuracy. Returns (best mask, history)."""
    spec.check()
    shape = scorer.grid
    g = torch.Generator().manual_seed(spec.seed)
    population = (torch.rand((spec.population, *shape), generator=g) < spec.init_density)
    population[0] = False  # the unablated model is always a candidate
    history = []
    for generation in tqdm(range(spec.generations), desc="ga", disable=not progress, unit="gen"):
        fitness = torch.tensor([scorer.score(HeadMask.from_tensor(p)) for p in population])
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
    fitness = torch.tensor([scorer.score(HeadMask.from_tensor(p)) for p in population])
    best = population[int(torch.argmax(fitness))]
    return HeadMask.from_tensor(best), history


def _tournament(fitness: torch.Tensor, size: int, g: torch.Generator) -> int:
    picks = torch.randint(0, len(fitness), (size,), generator=g)
    return int(picks[torch.argmax(fitness[picks])])
