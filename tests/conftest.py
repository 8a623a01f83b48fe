"""Shared fixtures: the RotatedDigits cache (built once), fake DomainBed folders, the real CLI."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on 2 cores: one intra-op thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "dg_heads_test_hf"))


LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """A test that tries to reach another machine fails at once (the offline variables above also
    reach the CLI subprocesses; this catches what they do not cover, in the test process)."""
    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            raise OSError(f"a test tried to reach the network: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory):
    """Folder indexes go to a temporary cache, never the user's `~/.cache`."""
    os.environ["DG_HEADS_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding RotatedDigits, shared by every test; `DG_HEADS_DATA` points at it."""
    root = tmp_path_factory.mktemp("data")
    from dg_heads.data import rotated_digits

    rotated_digits.build(root / "RotatedDigits")
    os.environ["DG_HEADS_DATA"] = str(root)
    return root


def make_domainbed(root: Path, folder: str, domains: dict[str, list[str]], per_class: int = 6,
                   size: int = 16, seed: int = 0) -> Path:
    """Write a fake DomainBed dataset `root/folder/<domain>/<class>/<i>.png` of random images."""
    rng = np.random.default_rng(seed)
    for domain, classes in domains.items():
        for cls in classes:
            (root / folder / domain / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / folder / domain / cls / f"{i:03d}.png")
    return root / folder


def make_benchmark(root: Path, name: str, per_class: int = 1, size: int = 16,
                   domains: list[str] | None = None, classes: list[str] | None = None, seed: int = 0) -> Path:
    """A small fake copy of a registry benchmark's layout (its domain and class folders)."""
    from dg_heads.data.registry import get_dataset

    info = get_dataset(name)
    chosen = list(classes or info.classes)
    return make_domainbed(root, info.folder, {d: chosen for d in (domains or info.domains)},
                          per_class=per_class, size=size, seed=seed)


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m dg_heads ARGS` (the same CLI as `lightning`) in `cwd`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "dg_heads", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The same CLI (`dg_heads.cli.main`) inside the test process, for runs that end at start-up
    (bad input, `--print_config`): a fresh interpreter would add ~8 s of imports and test nothing more."""
    from dg_heads.cli import main

    out, err, code, here, argv = io.StringIO(), io.StringIO(), 0, os.getcwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = ["dg-heads", *args]
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()  # reads sys.argv, as the console script does (args= too would make Lightning warn)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# Overrides that make a demo config a seconds-long smoke run.
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
         "--trainer.limit_val_batches", "1", "--data.init_args.num_workers", "0"]


CONFIGS = REPO / "configs"


def demo_configs(method: str) -> list[str]:
    """`--config` arguments of a method's demo, as `make demo` composes it: RotatedDigits, the
    method, then the demo preset (tiny CLIP on the CPU), which goes last and wins."""
    files = [CONFIGS / "data/rotated_digits.yaml", CONFIGS / f"method/{method}.yaml", CONFIGS / "trainer/demo.yaml"]
    return [a for f in files for a in ("--config", str(f))]


def gpu_configs(dataset: str, method: str) -> list[str]:
    """`--config` arguments of a benchmark run: the GPU preset, the dataset, the method."""
    files = [CONFIGS / "trainer/gpu.yaml", CONFIGS / f"data/{dataset}.yaml", CONFIGS / f"method/{method}.yaml"]
    return [a for f in files for a in ("--config", str(f))]


BENCHMARKS = ("pacs", "vlcs", "office_home", "terra_incognita", "domain_net")


@pytest.fixture(scope="session")
def five_benchmarks(tmp_path_factory) -> Path:
    """A data root with fake copies of the five DomainBed benchmarks (every domain and class folder
    of the registry, one tiny image per class)."""
    root = tmp_path_factory.mktemp("benchmarks")
    for name in BENCHMARKS:
        make_benchmark(root, name, per_class=1, size=8)
    return root
