"""DataLoader worker processes, shared by every DataModule: `num_workers: null` (the default) is the
CPUs the job has, less one for the training process (`SLURM_CPUS_PER_TASK`, else the CPU affinity
mask shared by the node's DDP processes)."""

from __future__ import annotations

import os


def job_cpus() -> int:
    """The CPUs this process may use: SLURM's `--cpus-per-task` when set, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def default_num_workers(local_processes: int = 1) -> int:
    """Loader worker processes when the config leaves `num_workers` unset: the job's CPUs less one
    (the training process's own), at least 0. Under SLURM `--cpus-per-task` is each process's own;
    otherwise the affinity mask is shared by the node's `local_processes` DDP processes (`lightning
    fit --trainer.devices 4` on a 64-core machine: 15 each, not 63)."""
    cpus = job_cpus()
    if not os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        cpus //= max(1, local_processes)
    return max(0, cpus - 1)


class NumWorkers:
    """A DataModule's `num_workers` property: the configured number (`self._num_workers`, set in
    `__init__`), else `default_num_workers` for the node's DDP processes of the trainer it is
    attached to (one process before that)."""

    _num_workers: int | None = None

    @property
    def num_workers(self) -> int:
        if self._num_workers is not None:
            return self._num_workers
        trainer = getattr(self, "trainer", None)
        return default_num_workers(getattr(trainer, "num_devices", 1) if trainer is not None else 1)

    @num_workers.setter
    def num_workers(self, value: int | None) -> None:
        self._num_workers = value
