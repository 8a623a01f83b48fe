"""Resuming a run that was killed or requeued, without losing work or logging anything twice.

`--ckpt_path last` resumes from the newest of: the `last*.ckpt` files of the run's
checkpoint callbacks (a SIGKILL loses only the steps since the last one) and the
`hpc_ckpt_N.ckpt` that SLURM's requeue signal has written into the same checkpoint folder
(`callbacks.RequeueOnSignal`; never another run's, as Lightning's own `default_root_dir` ones could be). TensorBoard
is told to purge events at or after the resumed step, so steps logged by the killed process
after its checkpoint are not shown twice.

Checkpoints are written whole or not at all (`AtomicCheckpointIO`, the CLI's default plugin):
a run killed while saving (a lost node, SIGKILL) leaves the previous checkpoint, never half of one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from dg_heads import compat

# what `RequeueOnSignal` saves on SLURM's signal (the name Lightning's own `ckpt_path="hpc"` reads)
REQUEUE_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves into a temporary file beside the checkpoint, flushed to disk, then renamed over it
    (one `os.replace`: atomic on one file system). Lightning's own save writes a temporary file in
    `$TMPDIR` and moves it; where that is another file system than the run folder (a node's /tmp,
    a shared run folder) the move is a copy, and a kill during it leaves half a checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):  # a remote file system: Lightning's (fsspec's) own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def resume_candidates(trainer) -> list[Path]:
    """Every checkpoint a resumed run could start from."""
    found: set[Path] = set()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            found |= compat.last_checkpoints(callback, trainer)
    for callback in trainer.checkpoint_callbacks:  # the requeue checkpoints (callbacks.RequeueOnSignal)
        folder = compat.checkpoint_folder(callback, trainer)  # where it saves (as above)
        if folder is not None and folder.is_dir():
            found |= {p for p in folder.glob("hpc_ckpt_*.ckpt") if REQUEUE_CHECKPOINT.fullmatch(p.name)}
    return [p for p in found if p.is_file()]


def next_requeue_checkpoint(folder: str | Path) -> Path:
    """`hpc_ckpt_N.ckpt` in `folder`, N one more than the highest there (1 in a new folder): what
    Lightning's checkpoint connector names its own SLURM checkpoints (hand-written: its
    `hpc_save_path` is private)."""
    folder = Path(folder)
    numbers = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else ())
               if (m := REQUEUE_CHECKPOINT.fullmatch(p.name))]
    return folder / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


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
    compat.set_purge_step(trainer.logger, step)


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


def unfinished_version(run_folder: Path) -> tuple[int, Path] | None:
    """The newest `version_N` under `run_folder` (`runs/<dataset>/<method>`) that has a checkpoint
    and did not finish (no `metrics_fit.json`, which `DomainReport` writes at the end of `fit`),
    with that checkpoint; None when there is none."""
    versions = []
    for folder in Path(run_folder).glob("version_*"):
        number = folder.name.removeprefix("version_")
        if folder.is_dir() and number.isdigit():
            versions.append((int(number), folder))
    for number, folder in sorted(versions, reverse=True):
        checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
        if checkpoints and not (folder / "metrics_fit.json").exists():
            return number, checkpoints[-1]
    return None


def _launch_rank() -> int:
    """This process's global rank as the launcher set it (before the Trainer exists)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def resume_run_folder(config) -> None:
    """`fit --ckpt_path last` on an ordinary run (a logger whose version is not fixed, unlike a
    sweep job's): continue the newest unfinished `version_N` of its run folder, in that folder
    (the logger's version is set to it, so the checkpoints and the TensorBoard curves continue
    there), saying which; with none, say so in one line and start afresh in a new version."""
    loggers = config.get("trainer.logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not hasattr(logger, "get") or not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
            continue
        args = logger.get("init_args")
        if args is None or args.get("version") is not None:
            return  # a fixed folder (a sweep job): its own checkpoints are found at fit start
        run_folder = Path(str(args.get("save_dir") or ".")) / str(args.get("name") or "")
        found = unfinished_version(run_folder)
        say = print if _launch_rank() == 0 else (lambda *a, **k: None)
        if found is None:
            say(f"dg-heads: --ckpt_path last: no unfinished run in {run_folder} (a version_N with a checkpoint "
                  f"and no metrics_fit.json); starting afresh", flush=True)
            config["ckpt_path"] = None
            return
        args["version"] = found[0]
        say(f"dg-heads: --ckpt_path last: continuing {run_folder / f'version_{found[0]}'} "
              f"(newest checkpoint there: {found[1].name})", flush=True)
        return

