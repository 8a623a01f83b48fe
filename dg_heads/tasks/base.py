"""What a task is (`Task`): see the package's docstring."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from dg_heads.tasks import metrics as names


class Task:
    """One task's side of a `DGModule`: what a batch holds, how the model scores it, what is
    logged and which metric selects checkpoints. Stateless: the metric states live on the module
    (`module.metrics`, `module.counts`: moved to its device, reset with it)."""

    name = "task"
    registry: dict[str, type[Task]] = {}  # name -> class: every subclass with its own `name`, on import

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        Task.registry[cls.name] = cls

    @property
    def monitor(self) -> str:
        """The validation metric that selects checkpoints (`ModelCheckpoint`'s monitor)."""
        return names.SELECTION[self.name][0]

    @property
    def mode(self) -> str:
        return names.SELECTION[self.name][1]

    def setup(self, module, datamodule, stage: str) -> None:
        """Build what scoring needs (class-prompt classifier, metric states) on `module`."""
        raise NotImplementedError

    def training_step(self, module, batch) -> tuple[Any, dict, int]:
        """(loss, what to log beside it, the batch's size) of one training batch."""
        raise NotImplementedError

    def eval_step(self, module, split: str, batch, dataloader_idx: int) -> None:
        raise NotImplementedError

    def epoch_end(self, module, split: str) -> None:
        """Compute, log and reset the metrics of `split` (`val` or `test`)."""
        raise NotImplementedError

    def report(self, **kwargs) -> Callback:
        """The callback that prints this task's table and writes `metrics_<stage>.json`."""
        raise NotImplementedError
