"""`dg_heads.environment`: installed packages that the version bounds cannot exclude (an old torch
or torchvision beside NumPy 2), refused at start-up in one line, from the versions alone."""

from importlib import metadata

import pytest

from dg_heads import environment
from dg_heads.errors import DGHeadsError
from tests.conftest import run_main


def _installed(monkeypatch, versions: dict[str, str | None]):
    """`importlib.metadata.version` as if `versions` were installed (None: not installed)."""
    real = metadata.version

    def version(name):
        if name not in versions:
            return real(name)
        if versions[name] is None:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)


def test_an_old_torch_beside_numpy_2_is_refused_in_one_line(monkeypatch, tmp_path):
    """torch < 2.4 and torchvision < 0.19 are built for NumPy 1.x; the bounds cannot say so. Through
    the CLI (in-process): a tool that imports nothing heavy still checks first."""
    installed = {"numpy": "2.1.0", "torch": "2.3.0+cu121", "torchvision": "0.18.0"}
    _installed(monkeypatch, installed)
    result = run_main("sweep", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: torch 2.3.0+cu121 is built for NumPy 1.x but numpy 2.1.0 is installed: pip install "
        "'numpy<2' (or torch >= 2.4); README, 'Installing on a cluster'"]
    installed.update(torch="2.4.0", torchvision="0.19.0")
    assert "is built for NumPy 1.x" not in run_main("sweep", "missing.yaml", cwd=tmp_path).stderr


def test_an_old_torchvision_alone_is_named(monkeypatch):
    _installed(monkeypatch, {"numpy": "2.0.0rc1", "torch": "2.5.1", "torchvision": "0.18.1"})
    with pytest.raises(DGHeadsError) as raised:
        environment.check()
    assert str(raised.value) == ("torchvision 0.18.1 is built for NumPy 1.x but numpy 2.0.0rc1 is installed: "
                                 "pip install 'numpy<2' (or torchvision >= 0.19); README, 'Installing on a cluster'")


@pytest.mark.parametrize("versions", [
    {"numpy": "1.26.4", "torch": "2.1.0", "torchvision": "0.16.0"},  # NumPy 1: what old builds need
    {"numpy": None, "torch": "2.1.0", "torchvision": "0.16.0"},  # no NumPy at all: nothing to clash
    {"numpy": "2.2.0", "torch": "2.10.0", "torchvision": None},  # 2.10 > 2.4 (numbers, not text); no torchvision
    {"numpy": "2.2.0", "torch": "2.4.0a0+git1234", "torchvision": "0.19.0"},  # the first builds for NumPy 2
])
def test_a_working_combination_passes(monkeypatch, versions):
    _installed(monkeypatch, versions)
    environment.check()
