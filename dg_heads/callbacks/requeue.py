"""SLURM's warning signal handled at a step boundary that every process agrees on.

A cluster job asks SLURM for a signal before its time limit (`#SBATCH --signal=USR1@90`). Lightning's
own handler saves the checkpoint inside the signal handler (Lightning issue #21406, open): that runs
between any two bytecodes of whatever the process was doing, and under DDP each process takes the
signal at another point of its step, so the handler's collectives (the checkpoint's barrier, the
module's all-gather) meet DDP's gradient all-reduces: a hang or a corrupt checkpoint. This callback
does what Lightning's open PR #21407 proposes: the handler only sets a flag; every
`trainer.log_every_n_steps` training steps (where the non-finite guard already syncs, so a step makes
no extra host sync) the processes reduce their flags, and when any process was signalled all of them
save `hpc_ckpt_N.ckpt` at that same step (the file `--ckpt_path last` resumes from), rank 0 requeues
the job (`scontrol requeue`, under SLURM) and the run ends with exit code 143. The signal must come
early enough for `log_every_n_steps` steps and a checkpoint write.

The CLI turns Lightning's handler off under SLURM (`SLURMEnvironment(auto_requeue=False)`); with a
plain `Trainer` this callback replaces Lightning's handler when training starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Requeued(SIGTERMException):
    """The run checkpointed on the requeue signal and stops (exit code 143): SLURM restarts it."""


def slurm_job_id() -> str | None:
    """`ARRAYJOB_TASK` for an array task, else the job id; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


class RequeueOnSignal(Callback):
    """Flag the requeue signal; checkpoint, requeue and stop at the next agreed step (module docstring)."""

    def __init__(self, signum: int = signal.SIGUSR1) -> None:
        self.signum = signum
        self.signalled = False
        self._previous = None
        self._last_checked = -1

    def _handler(self, signum, frame) -> None:
        self.signalled = True  # nothing else here: the step boundary does the work

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            previous = signal.signal(self.signum, self._handler)
            if self._previous is None:
                self._previous = previous

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # before any DataLoader worker forks: workers inherit a harmless handler
            self._install()

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()  # after Lightning registered its own handlers (a plain Trainer under SLURM)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_checked or step % max(1, trainer.log_every_n_steps):
            return
        self._last_checked = step
        signalled = self.signalled
        if trainer.world_size > 1:  # any process signalled: all stop here (one sync, every N steps)
            flag = torch.tensor(float(signalled), device=pl_module.device)
            signalled = bool(trainer.strategy.reduce(flag, reduce_op="max"))
        if not signalled:
            return
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every process: a collective-safe point
        job = slurm_job_id()
        if trainer.is_global_zero:
            if job is not None:
                done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                said = "requeued" if done.returncode == 0 else f"scontrol requeue failed: {done.stderr.strip()}"
            else:
                said = "not under SLURM: nothing requeued; resume with --ckpt_path last"
            print(f"\ndg-heads: signal {signal.Signals(self.signum).name} -> checkpoint {path} at global step {step}; "
                  f"{said}", flush=True)
        raise Requeued()
