"""`HeadSearch`: AAT's search as a named step of fit, which writes the mask file and hands the
mask to the module (through the CLI: test_module.py's scan, GA, bp and DDP runs)."""

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from dg_heads import heads
from dg_heads.heads import HeadMask
from dg_heads.methods.aat import HeadSearch, SearchReport


class SeenAfterEachStep(HeadSearch):
    """The search step as a user configures it (it takes the default's place), noting what the
    run folder and the module hold the moment each of its hooks ends."""

    def __init__(self) -> None:
        self.seen = {}

    def _note(self, hook, trainer, pl_module) -> None:
        path = Path(trainer.logger.log_dir) / "ablation.json"
        self.seen[hook] = {"file": json.loads(path.read_text()) if path.is_file() else None,
                           "mask": pl_module.mask, "ablated": heads.ablation_mask(pl_module.clip),
                           "stop": trainer.should_stop, "step": trainer.global_step}

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self._note("fit_start", trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._note("train_end", trainer, pl_module)


def test_the_search_step_writes_the_mask_file_and_the_module_applies_it(bp_in_process, tmp_path):
    """bp (its mask is top-3: never empty): when fit starts the step only plans, and training
    runs; when training ends the step has written `ablation.json`, and the module holds and
    applies that mask. The step runs once (the default `HeadSearch` is not added beside a
    configured one) and `SearchReport` still reports when fit ends."""
    model, data = bp_in_process
    step = SeenAfterEachStep()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        # (bar off: an in-process unit test of hooks, its output unread; CLI tests run with it on)
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                        logger=TensorBoardLogger(tmp_path, name="run"), callbacks=[step])
    trainer.fit(model, datamodule=data)
    assert [c for c in trainer.callbacks if isinstance(c, HeadSearch)] == [step]  # the configured one only
    assert any(isinstance(c, SearchReport) for c in trainer.callbacks)
    start, end = step.seen["fit_start"], step.seen["train_end"]
    assert start["file"] is None and not start["stop"] and not start["mask"]  # bp: trains first
    assert end["step"] == 2 and len(end["mask"]) == 3
    assert end["mask"] == end["ablated"] == HeadMask.from_dict(end["file"])
