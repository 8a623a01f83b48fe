"""DomainBed's holdout split, reproduced exactly.

Every expected number here was produced once by DomainBed's own code (facebookresearch/DomainBed
at b93c22a1, `domainbed/lib/misc.py`: `seed_hash`, `split_dataset`), called the way
`domainbed/scripts/train.py` calls it for domain `env_i`:
`out, in_ = misc.split_dataset(env, int(len(env) * holdout_fraction), misc.seed_hash(trial_seed, env_i))`,
and written here as literals (`in_.keys`, `out.keys`), so the tests check dg-heads against
DomainBed rather than against a second copy of the formula.
"""

import pytest

from dg_heads.data.splits import holdout_split, seed_hash

# misc.seed_hash(*args)
SEED_HASHES = {
    (0, 0): 894182419,
    (0, 1): 1514274641,
    (1, 0): 785910682,
    (2, 3): 1709828778,
    (1, 3): 1739848239,
    (3, 1): 1603725249,
    ("PACS", "ERM", 0, 3, 1): 1308418111,  # mixed types, as a sweep seeds its jobs
}

# (len(env), trial_seed, env_i, holdout_fraction) -> (in_.keys, out.keys)
DOMAINBED_SPLITS = {
    (20, 0, 0, 0.2): ([2, 11, 13, 16, 15, 1, 8, 9, 0, 3, 4, 5, 18, 19, 14, 12], [7, 6, 10, 17]),
    (20, 1, 0, 0.2): ([11, 12, 19, 6, 17, 7, 10, 16, 3, 5, 13, 0, 4, 2, 14, 1], [8, 9, 18, 15]),
    (20, 0, 1, 0.2): ([14, 18, 11, 8, 7, 16, 5, 2, 10, 15, 12, 6, 9, 19, 13, 4], [3, 1, 0, 17]),
    (17, 2, 3, 0.3): ([0, 6, 3, 12, 8, 1, 2, 15, 9, 14, 4, 7], [5, 13, 10, 11, 16]),  # int(5.1) = 5 held out
    (19, 0, 2, 0.2): ([9, 1, 8, 3, 5, 7, 11, 12, 6, 14, 17, 4, 13, 2, 10, 0], [15, 16, 18]),  # int(3.8) = 3, not 4
}


@pytest.mark.parametrize("args", sorted(SEED_HASHES, key=str), ids=str)
def test_seed_hash_is_domainbeds(args):
    assert seed_hash(*args) == SEED_HASHES[args]


@pytest.mark.parametrize("layout", sorted(DOMAINBED_SPLITS), ids=str)
def test_holdout_split_is_domainbeds_split(layout):
    num_samples, trial_seed, env_index, fraction = layout
    assert holdout_split(num_samples, trial_seed, env_index, fraction) == DOMAINBED_SPLITS[layout]


def test_holdout_split_partitions_and_depends_on_trial_seed():
    train, val = holdout_split(101, 0, 0, 0.2)
    assert len(val) == 20 and sorted(train + val) == list(range(101))
    assert holdout_split(101, 1, 0, 0.2)[1] != val
    assert holdout_split(101, 0, 0, 0.2) == (train, val)
