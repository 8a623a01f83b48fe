"""README's "Layout" section names every folder there is: each top-level folder of the repository
and every folder below `dg_heads/`, `configs/` and `experiments/` (the folders of `tests/` mirror the
code: `tests/test_tests_mirror_code.py`). A folder added or removed without the section saying so
fails here, with the folders to add to it or take out of it."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO

DESCENDED = ("dg_heads", "configs", "experiments")  # top-level folders whose every sub-folder is listed


def repository_files() -> list[str]:
    """The repository's files (tracked, and new ones git does not ignore) that exist."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the layout is checked in one")
    return [path for path in listed if (REPO / path).is_file()]


def folders_of(files: list[str]) -> set[str]:
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        if parts:
            folders.add(parts[0] + "/")
        if parts and parts[0] in DESCENDED:
            folders.update("/".join(parts[:i]) + "/" for i in range(2, len(parts) + 1))
    return folders


def layout_folders(readme: str) -> set[str]:
    """The folders the section lists: in its code block, a line that starts with a path ending in `/`."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return {line.split()[0] for line in block.splitlines()
            if line[:1] not in ("", " ") and line.split()[0].endswith("/")}


def test_readme_layout_names_every_folder():
    listed = layout_folders((REPO / "README.md").read_text())
    found = folders_of(repository_files())
    assert "dg_heads/tasks/" in found and "dg_heads/" in listed  # (the walk and the parse both see something)
    missing, gone = sorted(found - listed), sorted(listed - found)
    assert not missing and not gone, (
        f"README.md's Layout section is out of date: add {missing} (a line `<folder>/  what it holds`), "
        f"take out {gone}")
