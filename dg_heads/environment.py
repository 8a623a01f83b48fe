"""Combinations of installed packages that the version bounds cannot exclude, caught at start-up.

Package metadata cannot say "numpy < 2 when torch < 2.4" (an environment marker cannot test
another package's version), and pip happily installs numpy 2 beside an old site torch. Such an
environment fails far from the cause (`_ARRAY_API not found` when a tensor meets NumPy,
torchvision 0.18's ColorJitter overflowing in DomainBed's augmentation), so the CLI checks it
first, from the installed versions alone (nothing is imported).
"""

from __future__ import annotations

import re
from importlib import metadata

from dg_heads.errors import DGHeadsError

# (package, first version that works with NumPy 2)
NEEDS_NUMPY_1_BELOW = (("torch", (2, 4)), ("torchvision", (0, 19)))


def _version(package: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in re.findall(r"\d+", metadata.version(package))[:3])
    except metadata.PackageNotFoundError:
        return None


def check() -> None:
    numpy = _version("numpy")
    if numpy is None or numpy < (2,):
        return
    for package, first in NEEDS_NUMPY_1_BELOW:
        found = _version(package)
        if found is not None and found < first:
            raise DGHeadsError(
                f"{package} {metadata.version(package)} is built for NumPy 1.x but numpy "
                f"{metadata.version('numpy')} is installed: pip install 'numpy<2' (or {package} >= "
                f"{'.'.join(map(str, first))}); README, 'Installing on a cluster'"
            )
