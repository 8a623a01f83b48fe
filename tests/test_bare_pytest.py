"""`pytest` from the repository root (not only `python -m pytest`) collects the suite."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_bare_pytest_collects_from_the_repository_root():
    pytest_bin = Path(sys.executable).parent / "pytest"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # `python -m pytest` would put the working directory on sys.path; the bare command does not
    command = [str(pytest_bin), "--collect-only", "-q", "-p", "no:cacheprovider", "tests/cli/test_errors.py"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"\n\d+ tests? collected", result.stdout), result.stdout  # a file that imports tests.conftest
