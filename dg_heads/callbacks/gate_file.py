"""HAP's domain-invariant gates, where a person can read them: a TensorBoard heatmap at every
validation and `gates.json` / `gates.csv` (a row per block, a column per head) after training,
holding the gates of the checkpoint that `--test_after_fit` tests (the val/acc-selected one)."""

from __future__ import annotations

from pathlib import Path

import torch
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
        if getattr(pl_module, "gated_blocks", None) and trainer.is_global_zero:
            write_run_matrix(trainer, "gates", selected_gate_values(trainer, pl_module))


def selected_gate_values(trainer, pl_module) -> torch.Tensor:
    """[blocks, heads] gate values of `trainer.checkpoint_callback`'s best checkpoint (what
    `evaluate_selected_checkpoint` tests: DomainBed's training-domain validation selects among
    the validations), read with the loader that test uses; the module's own (final) gates when
    no checkpoint was selected (`enable_checkpointing: false`). The module is left as it is."""
    callback = trainer.checkpoint_callback
    path = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    if path is None or not path.is_file():
        return heads.gate_values(pl_module.clip)
    state = trainer.strategy.load_checkpoint(path)["state_dict"]
    names = {id(module): name for name, module in pl_module.named_modules()}
    rows = []
    for attn in heads.head_attentions(pl_module.clip):
        gate = attn.gate
        if gate is None:
            rows.append(torch.ones(attn.num_heads))
            continue
        theta = state.get(f"{names[id(gate)]}.theta") if gate.learnable else None
        rows.append((gate.values() if theta is None else gate.values(theta)).detach().float().cpu())
    return torch.stack(rows)
