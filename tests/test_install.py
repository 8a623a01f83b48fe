"""`pip install .` (not editable), as a cluster user installs dg-heads: what the installed package
needs at run time ships inside it (the SLURM scripts the sweep prints)."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_a_non_editable_install_prints_a_sweep_with_its_own_sbatch_script(tmp_path):
    """A fresh venv sees this environment's packages through a path line (no download: works
    offline), gets dg-heads from a copy of the sources with `--no-deps --no-build-isolation`,
    and prints a sweep away from the repository: the sbatch script it names is in the venv."""
    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("dg_heads", "data_modules"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages after the venv's own (a plain path: its editable-install hooks stay off)
    (purelib / "_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-build-isolation", "--no-index", str(source)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
runs_dir: {tmp_path / 'runs'}
configs: [{REPO}/configs/data/rotated_digits.yaml, "{REPO}/configs/method/{{method}}.yaml"]
methods: {{finetune: }}
datasets: {{rotated_digits: ["75"]}}
slurm: {{nodes: 2, cpu_only: true}}
""")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([str(python), "-c", "import dg_heads; print(dg_heads.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(purelib)), where.stdout + where.stderr  # not the repository's
    printed = subprocess.run([str(venv / "bin" / "dg-heads"), "sweep", str(spec), "--no-check", "--no-preflight"],
                             cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr[-2000:]
    sbatch_line = printed.stdout.strip().splitlines()[-1].split()
    script = Path(sbatch_line[-2])
    assert sbatch_line[0] == "sbatch" and "--nodes=2" in sbatch_line
    assert script.is_relative_to(purelib) and script.is_file(), printed.stdout
    assert script.read_text() == (REPO / "dg_heads/slurm/array.sbatch").read_text()
    assert (script.parent / "ddp.sbatch").is_file()  # the single-run script the README shows, shipped too
