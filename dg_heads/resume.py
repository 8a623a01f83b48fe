"""Resuming a run that was killed or requeued, without losing work or logging anything twice.

`--ckpt_path last` resumes from the newest of: the `last*.ckpt` files of the run's
checkpoint callbacks (a SIGKILL loses only the steps since the last one) and the
`hpc_ckpt_N.ckpt` that SLURM's requeue signal has written into `default_root_dir`
(`callbacks.RequeueOnSignal`; Lightning itself only looks at those when no `ckpt_path` is given). TensorBoard
is told to purge events at or after the resumed step, so steps logged by the killed process
after its checkpoint are not shown twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint


def resume_candidates(trainer) -> list[Path]:
    """Every checkpoint a resumed run could start from."""
    found: set[Path] = set()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            found |= {Path(p) for p in callback._find_last_checkpoints(trainer)}
    root = Path(trainer.default_root_dir)
    if root.is_dir():
        found |= {p for p in root.glob("hpc_ckpt_*.ckpt") if re.fullmatch(r"hpc_ckpt_\d+\.ckpt", p.name)}
    return [p for p in found if p.is_file()]


def checkpoint_step(path: Path) -> int:
    """The global step stored in a checkpoint (memory-mapped: the weights are not read)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(checkpoint.get("global_step", 0))


def newest_checkpoint(trainer) -> tuple[Path, int] | None:
    """The candidate with the highest global step (ties: the newest file), and that step."""
    candidates = resume_candidates(trainer)
    if not candidates:
        return None
    steps = {p: checkpoint_step(p) for p in candidates}
    best = max(candidates, key=lambda p: (steps[p], p.stat().st_mtime))
    return best, steps[best]


def purge_logged_after(trainer, step: int) -> None:
    """Make TensorBoard drop events at or after `step` that an earlier process wrote."""
    logger = trainer.logger
    if logger is not None and hasattr(logger, "_kwargs") and getattr(logger, "_experiment", None) is None:
        logger._kwargs["purge_step"] = step


def resume_checkpoint(trainer) -> str | None:
    """What `--ckpt_path last` means in dg-heads: the newest checkpoint (`newest_checkpoint`), with
    TensorBoard told to drop what was logged after it; None: start afresh. From Python:
    `trainer.fit(model, datamodule, ckpt_path=resume_checkpoint(trainer))`."""
    found = newest_checkpoint(trainer)
    if found is None:
        return None
    purge_logged_after(trainer, found[1])
    if trainer.is_global_zero:
        print(f"dg-heads: resuming from {found[0]} at global step {found[1]}", flush=True)
    return str(found[0])


def latest_checkpoint_file(trainer) -> Path | None:
    """The most recently written `.ckpt` of the run's checkpoint callbacks (what an error message
    points a user to), or None."""
    folders = {Path(c.dirpath) for c in getattr(trainer, "checkpoint_callbacks", []) if getattr(c, "dirpath", None)}
    files = [f for d in folders if d.is_dir() for f in d.glob("*.ckpt")]
    return max(files, key=lambda f: f.stat().st_mtime) if files else None
