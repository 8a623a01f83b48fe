"""DomainBed's holdout split, reproduced exactly."""

import hashlib

import numpy as np

from data_modules.splits import holdout_split, seed_hash


def test_seed_hash_is_domainbeds_md5_formula():
    expected = int(hashlib.md5(str((0, 0)).encode("utf-8")).hexdigest(), 16) % (2**31)
    assert seed_hash(0, 0) == expected == 894182419
    assert seed_hash(1, 3) != seed_hash(3, 1)


def test_holdout_split_matches_domainbed_procedure():
    keys = list(range(50))
    np.random.RandomState(seed_hash(2, 1)).shuffle(keys)
    train, val = holdout_split(50, trial_seed=2, domain_index=1, holdout_fraction=0.2)
    assert val == keys[:10] and train == keys[10:]


def test_holdout_split_partitions_and_depends_on_trial_seed():
    train, val = holdout_split(101, 0, 0, 0.2)
    assert len(val) == 20 and sorted(train + val) == list(range(101))
    assert holdout_split(101, 1, 0, 0.2)[1] != val
    assert holdout_split(101, 0, 0, 0.2) == (train, val)
