"""Run files come from callbacks every dg-heads model installs: a plain `Trainer` in Python leaves
the files the CLI leaves; a user's own callback of a default's type is kept."""

import json
from pathlib import Path

import pytest

from tests.conftest import demo_configs, run_main

LIMITS = {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 1, "limit_test_batches": 1}
TEMPLATES = ["a photo of the digit {}."]


def _datamodule():
    from dg_heads.data import DomainBedDataModule

    return DomainBedDataModule(dataset="rotated_digits", test_domains=["75"], image_size=32,
                               batch_size_per_domain=8, eval_batch_size=64, num_workers=0, train_augment="none")


def _trainer(save_dir: Path, callbacks=(), **overrides):
    from lightning import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    # (bar off: an in-process unit test of hooks, its output unread; every CLI test runs with it on)
    return Trainer(**{**LIMITS, **overrides}, accelerator="cpu", devices=1, enable_progress_bar=False,
                   enable_model_summary=False, callbacks=list(callbacks),
                   logger=TensorBoardLogger(save_dir, name="run", default_hp_metric=False))


def _names(folder: Path) -> set[str]:
    """The run folder's entries; every TensorBoard event file counts as one name."""
    return {"events" if p.name.startswith("events.out.tfevents") else p.name for p in folder.iterdir()}


@pytest.mark.slow
def test_a_plain_trainer_leaves_the_files_the_cli_leaves(data_root, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dg_heads.backbone import CLIPSpec
    from dg_heads.methods import HeadPurification
    from dg_heads.selection import evaluate_selected_checkpoint

    cli = run_main("fit", *demo_configs("hap"), *[f"--trainer.{k}={v}" for k, v in LIMITS.items()],
                   "--data.init_args.num_workers", "0",
                   "--data.init_args.batch_size_per_domain", "8", "--test_after_fit", "true", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cli_run = tmp_path / "runs/rotated_digits/hap/version_0"

    model = HeadPurification(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None, templates=TEMPLATES))
    datamodule = _datamodule()
    trainer = _trainer(tmp_path / "python", [ModelCheckpoint(monitor="val/acc", mode="max")])
    trainer.fit(model, datamodule)
    evaluate_selected_checkpoint(trainer, model, datamodule)  # what `--test_after_fit` does
    run = Path(trainer.logger.log_dir)

    expected = {"checkpoints", "events", "hparams", "hparams.yaml", "splits.json", "gates.json", "gates.csv",
                "metrics_fit.json", "metrics_validate.json", "metrics_test.json", "metrics_oracle.json"}
    assert _names(run) == expected
    assert _names(cli_run) == expected | {"config.yaml"}  # the resolved config: LightningCLI's own
    for name in ("metrics_fit.json", "metrics_validate.json", "metrics_test.json", "gates.json"):
        assert json.loads((run / name).read_text()).keys() == json.loads((cli_run / name).read_text()).keys(), name
    test = json.loads((run / "metrics_test.json").read_text())
    # the selected checkpoint's training-domain validation beside its held-out test
    assert {"val/acc", "val/acc/0", "val/acc/60", "test/acc", "test/acc/75", "test/n/75"} <= set(test)
    assert test["global_step"] == 4 and test["test/n/75"] == 64
    assert json.loads((run / "splits.json").read_text()) == json.loads((cli_run / "splits.json").read_text())

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for folder in (run, cli_run):
        assert "gates" in EventAccumulator(str(folder)).Reload().Tags()["images"]
        events = EventAccumulator(str(folder / "hparams")).Reload()  # the HParams tab's session of the run
        assert {"hp/test_acc", "hp/test_acc/75", "hp/val_acc"} <= set(events.Tags()["scalars"])
        assert b"gating/mmd_weight" in events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert "held out (test)" in cli.stdout


@pytest.mark.slow
def test_a_users_callback_replaces_the_default_and_the_marker_follows_its_stage(data_root, tmp_path):
    from dg_heads.backbone import CLIPSpec
    from dg_heads.callbacks import DomainReport, DoneMarker
    from dg_heads.methods import CLIPBaseline

    model = CLIPBaseline(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None, templates=TEMPLATES),
                         mode="linear_probe")
    datamodule = _datamodule()
    mine, marker = DomainReport(), tmp_path / "done"
    trainer = _trainer(tmp_path, [mine, DoneMarker(marker, stage="test")], limit_train_batches=2)
    trainer.fit(model, datamodule)
    run = Path(trainer.logger.log_dir)
    assert [c for c in trainer.callbacks if isinstance(c, DomainReport)] == [mine]  # kept, not replaced
    assert set(mine.results) == {"fit"} and (run / "metrics_fit.json").exists()
    assert not marker.exists()  # its stage is `test`

    trainer.test(model, datamodule)  # the weights the last validation (end of fit) saw
    assert [c for c in trainer.callbacks if isinstance(c, DomainReport)] == [mine]  # not added twice
    done = json.loads(marker.read_text())
    assert done["global_step"] == 2 and {"val/acc", "test/acc", "test/acc/75"} <= set(done)
    assert done == {**json.loads((run / "metrics_test.json").read_text())}

    # a checkpoint that no validation loaded: its test is reported without anyone's val/acc
    trainer.test(model, datamodule, ckpt_path=trainer.checkpoint_callback.best_model_path)
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert "test/acc" in metrics and not [k for k in metrics if k.startswith("val/")]
