"""Files a run leaves in its folder, written by rank 0 only and atomically.

Every run artifact (metrics, splits, gates, ablation masks, done markers) goes through
`write_atomic`: a killed or requeued job never leaves half a file for `collect` to read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def run_dir(trainer) -> Path | None:
    """The run folder (the logger's version folder), read without a collective call.

    `Trainer.log_dir` broadcasts from rank 0, so calling it on rank 0 alone deadlocks DDP.
    """
    logger = trainer.logger
    path = getattr(logger, "log_dir", None) if logger is not None else trainer.default_root_dir
    return Path(path) if path else None


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
    return path


def write_run_file(trainer, name: str | Path, data: str | bytes | Callable[[], str | bytes]) -> Path | None:
    """`name` in the run folder, on rank 0 (other ranks and runs without a folder: nothing).

    An absolute `name` is that file (a sweep's done marker lies outside the run folder). `data`
    may be a function that builds the text: it is then called on rank 0 only (a split manifest
    of 600,000 file names is not worth building on every process)."""
    if trainer is None or not trainer.is_global_zero:
        return None
    if Path(name).is_absolute():
        path = Path(name)
    else:
        folder = run_dir(trainer)
        if folder is None:
            return None
        path = folder / name
    return write_atomic(path, data() if callable(data) else data)
