"""The seeded genetic search: reproducible, served from its fitness cache, elitist; bad settings fail
at construction."""

import pytest

from dg_heads.errors import DGHeadsError
from dg_heads.methods import AttentionAblation, SearchSpec
from dg_heads.methods.aat import GASpec, genetic_search


def test_ga_is_reproducible_with_a_seed_and_uses_its_caches(scorer):
    scorer = scorer[0]
    spec = GASpec(population=6, generations=4, init_density=0.2, seed=3)
    first = genetic_search(scorer, spec, progress=False)
    evaluations = scorer.evaluations
    second = genetic_search(scorer, spec, progress=False)
    assert first == second
    assert len(scorer.scores) < evaluations  # repeated masks came from the fitness cache
    assert first[1][-1]["best"] >= first[1][0]["best"]  # elitism never loses the best


@pytest.mark.parametrize("spec, message", [
    (GASpec(population=1), "population must be >= 2, got 1"),
    (GASpec(mutation_rate=1.5), "mutation_rate must be in"),
])
def test_bad_ga_settings_fail_at_construction(spec, message):
    with pytest.raises(DGHeadsError, match=message):
        AttentionAblation(search=SearchSpec(strategy="ga", ga=spec))
