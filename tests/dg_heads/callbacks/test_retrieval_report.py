"""`RetrievalReport` on a plain Trainer, in process: a toy module logs fixed recalls (no model),
so the files, the printed recall table and the HParams tab are known by hand (the recalls of a
real model through the CLI: tests/cli/test_retrieval_cli.py)."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dg_heads.callbacks.retrieval_report import RetrievalReport
from tests.dg_heads.callbacks.test_domain_report import FixedAccuracies, OneBatchEach, fit_two_steps

RECALLS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
VAL = dict(zip(RECALLS, [10.0, 20.0, 30.0, 5.0, 15.0, 25.0]))
TEST = dict(zip(RECALLS, [40.0, 50.0, 60.0, 35.0, 45.0, 55.0]))


class OneDataset(OneBatchEach):
    """One evaluation dataset, `digits`: 6 validation images, 8 test images."""

    def eval_domains(self, stage: str) -> list[str]:
        return ["digits"]

    def eval_sizes(self, stage: str) -> dict[str, int]:
        return {"digits": 6 if stage == "val" else 8}


def test_a_test_of_the_validated_weights_holds_both_and_prints_the_recall_table(tmp_path, capsys):
    """The retrieval entries only (not a classification `val/acc` nor the loss): metrics_test.json
    holds the validation's recalls and RSUM (10+20+30+5+15+25 = 105) beside the test's (285), the
    printed table a row per stage in percent, and the HParams tab `hp/<stage>_<recall>`."""
    logged = {"val": {**{f"val/{k}": v for k, v in VAL.items()}, "val/rsum": 105.0, "val/n/digits": 6.0,
                      "val/acc": 0.5, "val/loss": 2.0},
              "test": {**{f"test/{k}": v for k, v in TEST.items()}, "test/rsum": 285.0, "test/n/digits": 8.0}}
    model, data = FixedAccuracies(logged), OneDataset()
    trainer = fit_two_steps(RetrievalReport(), model, data, tmp_path)
    capsys.readouterr()
    trainer.test(model, datamodule=data, verbose=False)
    run = tmp_path / "run/version_0"
    assert json.loads((run / "metrics_test.json").read_text()) == {
        **{f"val/{k}": v for k, v in VAL.items()}, "val/rsum": 105.0, "val/n/digits": 6.0,
        **{f"test/{k}": v for k, v in TEST.items()}, "test/rsum": 285.0, "test/n/digits": 8.0,
        "global_step": 2, "epoch": 1}
    printed = capsys.readouterr().out
    assert f"test of the weights in memory (global step 2); run folder {run}" in printed
    rows = [[cell.strip() for cell in line.split("|")] for line in printed.splitlines() if line.count("|") == 9]
    assert rows == [["dataset", "split", "images", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5",
                     "t2i R@10", "RSUM"],
                    ["digits", "val", "6", "10.00", "20.00", "30.00", "5.00", "15.00", "25.00", "105.00"],
                    ["digits", "test", "8", "40.00", "50.00", "60.00", "35.00", "45.00", "55.00", "285.00"]]
    events = EventAccumulator(str(run / "hparams"))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalars == {**{f"hp/val_{k}": v for k, v in VAL.items()}, "hp/val_rsum": 105.0,
                       **{f"hp/test_{k}": v for k, v in TEST.items()}, "hp/test_rsum": 285.0}
