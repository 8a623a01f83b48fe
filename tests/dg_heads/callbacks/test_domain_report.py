"""`DomainReport` on a plain Trainer, in process: a toy module logs fixed accuracies (no model),
so every figure of the files, the printed table and the HParams tab is known by hand."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from dg_heads.callbacks import DomainReport


class FixedAccuracies(L.LightningModule):
    """Logs what a DG method logs at validation and test (`val/acc/<domain>`, `val/n/<domain>`,
    the mean `val/acc`, ...), as fixed numbers."""

    def __init__(self, logged: dict[str, dict[str, float]]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.logged = logged

    def training_step(self, batch, batch_idx):
        return (self.weight * batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log_dict(self.logged["val"])

    def test_step(self, batch, batch_idx):
        self.log_dict(self.logged["test"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def hparams_for_logging(self) -> dict:
        return {"method": "toy"}


class OneBatchEach(L.LightningDataModule):
    """Two training batches, one validation and one test batch (the figures logged are fixed)."""

    def train_dataloader(self):
        return DataLoader(torch.ones(4, 1), batch_size=2)

    def val_dataloader(self):
        return DataLoader(torch.ones(2, 1), batch_size=2)

    def test_dataloader(self):
        return DataLoader(torch.ones(2, 1), batch_size=2)


class TwoSourcesOneTarget(OneBatchEach):
    """Sources `a`, `b` (4 validation images each), held-out `c` (8 test images)."""

    source_domains, test_domains = ["a", "b"], ["c"]

    def __init__(self) -> None:
        super().__init__()
        self.oracle_pass = False

    def eval_sizes(self, split: str) -> dict[str, int]:
        return {"val": {"a": 4, "b": 4}, "test": {"c": 8}}[split]


LOGGED = {"val": {"val/acc": 0.5, "val/acc/a": 0.25, "val/acc/b": 0.75, "val/n/a": 4.0, "val/n/b": 4.0,
                  "val/loss": 1.5},
          "test": {"test/acc": 0.625, "test/acc/c": 0.625, "test/n/c": 8.0}}


def fit_two_steps(report, model, data, folder) -> L.Trainer:
    """Two training steps, validated at the end, with `report` in the default report's place."""
    trainer = L.Trainer(accelerator="cpu", max_steps=2, num_sanity_val_steps=0, callbacks=[report],
                        logger=TensorBoardLogger(folder, name="run"), enable_checkpointing=False,
                        # (bar off: an in-process test of the callback's files, its output unread)
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.fixture()
def fitted(tmp_path):
    report, model, data = DomainReport(), FixedAccuracies(LOGGED), TwoSourcesOneTarget()
    return fit_two_steps(report, model, data, tmp_path), model, data, report, tmp_path / "run/version_0"


def test_a_test_of_the_validated_weights_holds_both_and_prints_the_domain_table(fitted, capsys):
    """Tested on the weights in memory at the step they were validated: metrics_test.json holds
    the `val/*` accuracies beside the `test/*` ones (no loss), the printed table names the weights
    and has a row per domain and mean, and the HParams session has the `hp/*` accuracies."""
    trainer, model, data, report, run = fitted
    capsys.readouterr()
    trainer.test(model, datamodule=data, verbose=False)
    assert json.loads((run / "metrics_test.json").read_text()) == {
        "val/acc": 0.5, "val/acc/a": 0.25, "val/acc/b": 0.75, "val/n/a": 4.0, "val/n/b": 4.0,
        "test/acc": 0.625, "test/acc/c": 0.625, "test/n/c": 8.0, "global_step": 2, "epoch": 1}
    printed = capsys.readouterr().out
    assert f"test of the weights in memory (global step 2); run folder {run}" in printed
    rows = [[cell.strip() for cell in line.split("|")] for line in printed.splitlines() if line.count("|") == 3]
    assert rows == [["domain", "role", "accuracy", "images"], ["a", "source (val)", "25.00", "4"],
                    ["b", "source (val)", "75.00", "4"], ["mean", "source (val)", "50.00", ""],
                    ["c", "held out (test)", "62.50", "8"], ["mean", "held out (test)", "62.50", ""]]
    events = EventAccumulator(str(run / "hparams"))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalars == {"hp/val_acc": 0.5, "hp/val_acc/a": 0.25, "hp/val_acc/b": 0.75,
                       "hp/test_acc": 0.625, "hp/test_acc/c": 0.625}


def test_the_oracle_pass_is_its_own_file_without_the_mean_of_in_and_out(fitted):
    """The DataModule's oracle pass (each test domain's `in` and `out` splits as test loaders):
    metrics_oracle.json, without `test/acc` (a mean of `in` and `out` means nothing), and no
    metrics_test.json."""
    trainer, model, data, report, run = fitted
    data.oracle_pass = True
    trainer.test(model, datamodule=data, verbose=False)
    assert json.loads((run / "metrics_oracle.json").read_text()) == {
        "test/acc/c": 0.625, "test/n/c": 8.0, "global_step": 2, "epoch": 1}
    assert not (run / "metrics_test.json").exists()
    assert set(report.results) == {"fit", "oracle"}
