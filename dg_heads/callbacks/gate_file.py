"""HAP's domain-invariant gates, where a person can read them: a TensorBoard heatmap at every
validation and `gates.json` / `gates.csv` (a row per block, a column per head) after training."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from dg_heads import heads
from dg_heads.heatmap import log_heatmap, write_run_matrix


class GateFile(Callback):
    """For a model with gated blocks (`pl_module.gated_blocks`, its `clip` given gates by
    `heads.add_gates`); does nothing for one without."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "gated_blocks", None) and not trainer.sanity_checking:
            log_heatmap(pl_module, "gates", heads.gate_values(pl_module.clip))

    def on_train_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "gated_blocks", None):
            write_run_matrix(trainer, "gates", heads.gate_values(pl_module.clip))
