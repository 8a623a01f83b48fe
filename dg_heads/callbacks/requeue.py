"""SLURM's warning signal handled at a point that every process agrees on.

A cluster job asks SLURM for a signal before its time limit (`#SBATCH --signal=USR1@300`). Lightning's
own handler saves the checkpoint inside the signal handler (Lightning issue #21406, open): that runs
between any two bytecodes of whatever the process was doing, and under DDP each process takes the
signal at another point of its step, so the handler's collectives (the checkpoint's barrier, the
module's all-gather) meet DDP's gradient all-reduces: a hang or a corrupt checkpoint. This callback
does what Lightning's open PR #21407 proposes: the handler only sets a flag (installed once per
process, at the first stage, and kept: a signal between two stages is not lost). The processes
reduce their flags

- in training every `trainer.log_every_n_steps` steps (where the non-finite guard already syncs, so
  a step makes no extra host sync) and at the end of each validation: when any process was
  signalled, all of them save `hpc_ckpt_N.ckpt` together, into the run's checkpoint folder (where
  `--ckpt_path last` looks; a run never picks up another run's); at the next batch's start (the
  saved step's logs written by then, so none is lost) rank 0 requeues the job (`scontrol
  requeue`) and the run ends with exit code 143;
- at the end of a `validate`, `test` or `predict` stage (e.g. `--test_after_fit`): nothing to save;
  rank 0 requeues and the run ends the same way, to be run again.

The signal must come early enough for `log_every_n_steps` steps (or the rest of a validation) and
one checkpoint write. Not checked inside AAT's scan/GA search (`on_fit_start`).

The CLI turns Lightning's handler off under SLURM (`SLURMEnvironment(auto_requeue=False)`); with a
plain `Trainer` this callback replaces Lightning's handler when training starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dg_heads.resume import next_requeue_checkpoint

_SIGNALLED: dict[int, bool] = {}  # signal number -> seen in this process (one handler per process)


class Requeued(SIGTERMException):
    """The run stopped on the requeue signal (checkpointed first in training): exit code 143, SLURM
    restarts it. `rank` is the global rank of the process that raised it."""

    def __init__(self, rank: int = 0) -> None:
        super().__init__()
        self.rank = rank


def slurm_job_id() -> str | None:
    """`ARRAYJOB_TASK` for an array task, else the job id; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _flag(signum, frame) -> None:
    _SIGNALLED[signum] = True  # nothing else here: the agreed point does the work


def install(signum: int) -> None:
    """This process's flag handler for `signum` (main thread only; again after Lightning's own)."""
    if threading.current_thread() is threading.main_thread():
        _SIGNALLED.setdefault(signum, False)
        signal.signal(signum, _flag)


class RequeueOnSignal(Callback):
    """Flag the requeue signal; at the next agreed point checkpoint (in training), requeue and stop."""

    def __init__(self, signum: int = signal.SIGUSR1) -> None:
        self.signum = signum
        self._last_checked = -1
        self._saved: str | None = None  # in training: checkpointed; the run stops at the next batch's start

    @property
    def signalled(self) -> bool:
        return _SIGNALLED.get(self.signum, False)

    def setup(self, trainer, pl_module, stage: str) -> None:
        install(self.signum)  # before any DataLoader worker forks: workers inherit a harmless handler

    def on_train_start(self, trainer, pl_module) -> None:
        install(self.signum)  # after Lightning registered its own handlers (a plain Trainer under SLURM)

    def _agreed(self, trainer, pl_module) -> bool:
        signalled = self.signalled
        if trainer.world_size > 1:  # any process signalled: all stop here (one sync)
            flag = torch.tensor(float(signalled), device=pl_module.device)
            signalled = bool(trainer.strategy.reduce(flag, reduce_op="max"))
        return signalled

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self._saved is not None or step == self._last_checked or step % max(1, trainer.log_every_n_steps):
            return
        self._last_checked = step
        if self._agreed(trainer, pl_module):
            self._save(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._saved is not None:  # the saved step's own logs are written by now: stop before the next
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._saved is not None:  # training ended right after the checkpoint: still requeue (the test is left)
            self._stop(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._saved is not None:
            return
        if self._agreed(trainer, pl_module):  # in fit: a point where ModelCheckpoint saves too
            if trainer.state.fn == "fit":
                self._save(trainer)
            else:
                self._stop(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        if self._agreed(trainer, pl_module):
            self._stop(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._agreed(trainer, pl_module):
            self._stop(trainer)

    def _save(self, trainer) -> None:
        """Every process saves `hpc_ckpt_N.ckpt` (a collective-safe point; rank 0 writes it)."""
        folder = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        path = next_requeue_checkpoint(folder)
        trainer.save_checkpoint(path)
        self._saved = f"checkpoint {Path(path)} at global step {trainer.global_step}; "

    def _stop(self, trainer) -> None:
        """Rank 0 requeues (only now: `scontrol requeue` ends the running job soon after), all stop."""
        saved, self._saved = self._saved or "", None
        if trainer.is_global_zero:
            job = slurm_job_id()
            if job is not None:
                done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                said = "requeued" if done.returncode == 0 else f"scontrol requeue failed: {done.stderr.strip()}"
            else:
                said = "not under SLURM: nothing requeued; run the same command again (--ckpt_path last)"
            print(f"\ndg-heads: signal {signal.Signals(self.signum).name} -> {saved}{said}", flush=True)
        raise Requeued(trainer.global_rank)
