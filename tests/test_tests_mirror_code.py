"""The tests mirror the code: every module `dg_heads/<path>/<module>.py` has its own test file
`tests/dg_heads/<path>/test_<module>.py` (`__init__.py` and `__main__.py` aside), so that a
module's tests are found from its path (tests/README.md)."""

from __future__ import annotations

from tests.conftest import REPO
from tests.test_readme_layout import repository_files


def modules_without_tests(files: list[str]) -> list[str]:
    present = set(files)
    missing = []
    for path in files:
        folder, _, name = path.rpartition("/")
        if path.startswith("dg_heads/") and name.endswith(".py") and name not in ("__init__.py", "__main__.py"):
            if f"tests/{folder}/test_{name}" not in present:
                missing.append(f"{path} -> tests/{folder}/test_{name}")
    return sorted(missing)


def test_the_mirror_rule_maps_paths():
    files = ["dg_heads/heads/mask.py", "tests/dg_heads/heads/test_mask.py", "dg_heads/cli.py",
             "dg_heads/__init__.py", "dg_heads/__main__.py", "dg_heads/data/own.py", "tests/dg_heads/test_own.py"]
    assert modules_without_tests(files) == ["dg_heads/cli.py -> tests/dg_heads/test_cli.py",
                                            "dg_heads/data/own.py -> tests/dg_heads/data/test_own.py"]


def test_every_module_has_its_own_test_file():
    missing = modules_without_tests(repository_files())
    assert (REPO / "dg_heads" / "tasks" / "metrics.py").is_file()
    assert not missing, f"{len(missing)} module(s) without their own test file:\n" + "\n".join(missing)
