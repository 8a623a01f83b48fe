"""A test-only callback: turns a trainable weight into NaN at a chosen step (a diverging run)."""

import torch
from lightning.pytorch.callbacks import Callback


class PoisonAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(p for p in pl_module.parameters() if p.requires_grad).fill_(float("nan"))
