"""Print pip/uv constraints that hold every direct dependency at its declared lower bound.

`make test-floor` installs with these and uv's lowest-direct resolution: lowest-direct alone
lets a newest transitive dependency lift a direct one above its floor (pandas 3 lifts numpy to
1.26), and then the floor that pyproject.toml names is not the one tested. A dependency without
a lower bound is an error: every floor is meant to be tested.
Usage: python .ci/floor_constraints.py [EXTRA ...]   (e.g. dev)
"""
import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"]]
for extra in sys.argv[1:]:
    requirements += project["optional-dependencies"][extra]
for requirement in requirements:
    spec, _, marker = requirement.partition(";")
    name = re.match(r"\s*([A-Za-z0-9._-]+)", spec).group(1)
    floor = re.search(r">=\s*([^,\s]+)", spec)
    if floor is None:
        sys.exit(f"{requirement!r} has no lower bound (>=) to test")
    print(f"{name}=={floor.group(1)}" + (f"; {marker.strip()}" if marker.strip() else ""))
