"""`DoneMarker`: the file a finished stage leaves (its report's figures and the step), written only for
its own stage, only on rank 0, and never when the stage raised."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from dg_heads.callbacks import DomainReport, DoneMarker


def _trainer(callbacks=(), global_step=7, rank_zero=True):
    return SimpleNamespace(callbacks=list(callbacks), global_step=global_step, is_global_zero=rank_zero)


def test_the_marker_holds_its_stages_report_and_the_step(tmp_path):
    report = DomainReport()
    report.results = {"fit": {"val/acc": 0.5}, "test": {"test/acc": 0.25, "test/acc/75": 0.125}}
    marker = DoneMarker(tmp_path / "sweep" / "done.json", stage="test")
    marker.teardown(_trainer([report]), None, "fit")  # another stage: nothing
    assert not marker.path.exists()
    marker.teardown(_trainer([report]), None, "test")
    assert json.loads(marker.path.read_text()) == {"test/acc": 0.25, "test/acc/75": 0.125, "global_step": 7}
    report.results["test"]["global_step"] = 3  # the report's own step is kept
    marker.teardown(_trainer([report]), None, "test")
    assert json.loads(marker.path.read_text())["global_step"] == 3


def test_without_a_report_the_marker_holds_the_step_and_other_ranks_write_nothing(tmp_path):
    marker = DoneMarker(tmp_path / "done", stage="fit")
    marker.teardown(_trainer(rank_zero=False), None, "fit")
    assert not marker.path.exists()
    marker.teardown(_trainer(global_step=12), None, "fit")
    assert json.loads(marker.path.read_text()) == {"global_step": 12}


def test_a_stage_that_raised_leaves_no_marker_and_one_that_finished_does(tmp_path):
    from lightning import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    class Failing(BoringModel):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    def fit(model, path):
        # (bar off: an in-process unit test of one callback's file, its output unread; CLI tests run with it on)
        trainer = Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[DoneMarker(path)],
                          default_root_dir=tmp_path)
        trainer.fit(model)

    with pytest.raises(RuntimeError, match="boom"):
        fit(Failing(), tmp_path / "failed")
    assert not (tmp_path / "failed").exists()
    fit(BoringModel(), tmp_path / "finished")
    assert json.loads((tmp_path / "finished").read_text()) == {"global_step": 2}
