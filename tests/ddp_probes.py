"""Callbacks that behave differently on rank 0, as users' and libraries' callbacks do, for the DDP tests
(loaded by class path: `--trainer.callbacks+=tests.ddp_probes.RankZeroMetricsReader`).

Lightning reduces `sync_dist` epoch metrics lazily, at their first read, so a callback that reads the
metrics on rank 0 alone (a progress bar, a notifier, a rich table) moves that collective earlier on
rank 0 only. Any collective that dg-heads runs between that read and the other ranks' first read
then meets a different collective on each rank: a deadlock."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class RankZeroMetricsReader(Callback):
    """Reads every metric dict on rank 0, at every hook where a rank-0-only callback may."""

    def __init__(self) -> None:
        self.reads = 0

    def _read(self, trainer) -> None:
        if trainer.global_rank == 0:
            dict(trainer.callback_metrics), dict(trainer.progress_bar_metrics), dict(trainer.logged_metrics)
            self.reads += 1

    def on_train_batch_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_train_epoch_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_validation_epoch_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_validation_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_train_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_test_epoch_end(self, trainer, *args) -> None:
        self._read(trainer)

    def on_test_end(self, trainer, *args) -> None:
        self._read(trainer)


class RankZeroCollective(Callback):
    """A bug on purpose: an all-reduce on rank 0 alone, after the first training step. The other
    ranks never join it: the run must end with an error within `--ddp_timeout`, not hang."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 0 and trainer.global_step == 1:
            torch.distributed.all_reduce(torch.zeros(1))


class SignalSelf(Callback):
    """Sends `signum` (SLURM's requeue signal by default) to this process on rank `rank` alone,
    after training step `step`: as when the signal reaches the processes at different moments."""

    def __init__(self, rank: int = 0, step: int = 1, signum: int = 10, during_test: bool = False) -> None:
        self.rank, self.step, self.signum, self.during_test = rank, step, signum, during_test

    def _send(self) -> None:
        import os

        os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.during_test and trainer.global_rank == self.rank and trainer.global_step == self.step:
            self._send()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.during_test and trainer.global_rank == self.rank and batch_idx == 0:
            self._send()  # (`during_test`: after the first test batch instead)
