"""Test-only callbacks: a weight turned into NaN at a chosen step (a diverging run); slow steps with a
progress file (kill and requeue tests)."""

import torch
from lightning.pytorch.callbacks import Callback


class PoisonAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(p for p in pl_module.parameters() if p.requires_grad).fill_(float("nan"))


class SlowSteps(Callback):
    """Slows training down and writes the global step to a file after every batch, so a test
    can kill or requeue a run in the middle, at a step it knows."""

    def __init__(self, seconds: float, progress_file: str) -> None:
        self.seconds, self.progress_file = seconds, progress_file

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time
        from pathlib import Path

        time.sleep(self.seconds)
        if trainer.is_global_zero:
            Path(self.progress_file).write_text(str(trainer.global_step))
