"""`dg_heads.selection` (what `--test_after_fit` runs after `fit`), with a real Trainer and a one-weight
model whose weight counts its SGD steps: the oracle's test sees the LAST weights on the test domains'
`in`/`out` splits; training-domain validation validates and tests the checkpoint with the best
`val/acc`; the done marker follows only the latter. (That `collect` then picks per selection:
`test_collect.py`.)"""

import contextlib

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from dg_heads.callbacks.done_marker import DoneMarker
from dg_heads.selection import evaluate_selected_checkpoint


class OneWeight(LightningModule):
    """`w` starts at 0; the loss -w with SGD at lr 1 adds 1 per step (one step an epoch): after epoch
    e, w = e + 1. `val/acc` = 10 - w: the best validation is epoch 0's checkpoint (w = 1)."""

    def __init__(self, seen: list):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = seen

    def training_step(self, batch, batch_idx):
        return -self.w

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 10 - self.w.detach())
        self.seen.append(("validate", self.w.item(), self.trainer.datamodule.oracle))

    def test_step(self, batch, batch_idx):
        self.seen.append(("test", self.w.item(), self.trainer.datamodule.oracle))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


class Data(LightningDataModule):
    """One batch per split; `oracle_test()` is on while the oracle's splits are tested."""

    oracle = False

    def _one(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1), batch_size=1)

    train_dataloader = val_dataloader = test_dataloader = _one

    @contextlib.contextmanager
    def oracle_test(self):
        self.oracle = True
        try:
            yield
        finally:
            self.oracle = False


class Marker(DoneMarker):
    def teardown(self, trainer, pl_module, stage):
        if stage == self.stage:
            pl_module.seen.append(("done marker", pl_module.w.item(), trainer.datamodule.oracle))
        super().teardown(trainer, pl_module, stage)


def _fit(tmp_path, checkpoints: bool):
    seen = []
    model, data = OneWeight(seen), Data()
    callbacks = [Marker(tmp_path / "done", stage="test")]
    if checkpoints:
        callbacks.insert(0, ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max"))
    trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=checkpoints, callbacks=callbacks,
                      num_sanity_val_steps=0, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert model.w.item() == 3.0 and [s[1] for s in seen] == [1.0, 2.0, 3.0]  # the fit: w after each epoch
    seen.clear()
    evaluate_selected_checkpoint(trainer, model, data)
    return seen, trainer


def test_the_oracle_tests_the_last_weights_and_training_domain_validation_the_best_checkpoint(tmp_path):
    seen, trainer = _fit(tmp_path, checkpoints=True)
    assert seen == [("test", 3.0, True),  # the oracle: last weights, the test domains' in/out splits
                    ("validate", 1.0, False),  # the best val/acc (epoch 0), validated ...
                    ("test", 1.0, False),  # ... and tested
                    ("done marker", 1.0, False)]  # after that test only, not the oracle's
    assert sum(isinstance(c, DoneMarker) for c in trainer.callbacks) == 1  # held back, then put back
    assert (tmp_path / "done").is_file()


def test_without_a_saved_checkpoint_the_weights_in_memory_are_selected(tmp_path):
    seen, _ = _fit(tmp_path, checkpoints=False)
    assert seen == [("test", 3.0, True), ("validate", 3.0, False), ("test", 3.0, False), ("done marker", 3.0, False)]


def test_a_datamodule_without_oracle_splits_skips_the_oracle(tmp_path, monkeypatch):
    monkeypatch.delattr(Data, "oracle_test")
    seen, _ = _fit(tmp_path, checkpoints=True)
    assert seen == [("validate", 1.0, False), ("test", 1.0, False), ("done marker", 1.0, False)]

