"""DomainBed's holdout split, reproduced exactly so numbers compare with DomainBed tables.

DomainBed (`datasets.py`/`train.py`): for domain `env_i` of a dataset,
`keys = list(range(len(env)))`, `RandomState(seed_hash(trial_seed, env_i)).shuffle(keys)`,
`out = keys[:int(len(env) * holdout_fraction)]`, `in = keys[n:]`.
"""

from __future__ import annotations

import hashlib

import numpy as np


def seed_hash(*args: object) -> int:
    """DomainBed's `misc.seed_hash`: a seed derived from a tuple of values."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def holdout_split(num_samples: int, trial_seed: int, domain_index: int,
                  holdout_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Indices of the `in` (train) and `out` (validation) splits of one domain."""
    keys = list(range(num_samples))
    np.random.RandomState(seed_hash(trial_seed, domain_index)).shuffle(keys)
    n_out = int(num_samples * holdout_fraction)
    return keys[n_out:], keys[:n_out]
