"""`make demo-aat` (experiments/demo_aat.py): the AAT demos start from the fine-tuning demo's
val/acc-selected checkpoint, made first when there is none, and each says what it chose and tests
the masked model."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from experiments.demo_aat import finetuned_checkpoint
from tests.conftest import REPO


def _run(root, version: str, *, finished: bool = True, best: tuple[str, ...] = ("best-step=10.ckpt",)):
    """A fake fine-tune run folder: its checkpoints, and `metrics_fit.json` once its fit ended."""
    folder = root / version
    (folder / "checkpoints").mkdir(parents=True)
    for name in (*best, "last.ckpt"):
        (folder / "checkpoints" / name).write_bytes(b"")
    if finished:
        (folder / "metrics_fit.json").write_text("{}")
    return folder


def test_the_newest_finished_fine_tune_run_gives_its_selected_checkpoint(tmp_path):
    """`make demo` twice: version_1 (then version_10, by number not by name) is used once its fit
    has ended; a run still going, or one without a single best checkpoint, is passed over;
    `last.ckpt` never."""
    runs = tmp_path / "runs/rotated_digits/finetune"
    assert finetuned_checkpoint(runs) is None
    _run(runs, "version_0", best=("best-step=176.ckpt",))
    assert finetuned_checkpoint(runs) == runs / "version_0/checkpoints/best-step=176.ckpt"
    _run(runs, "version_1", finished=False)  # a second `make demo`, still training
    assert finetuned_checkpoint(runs) == runs / "version_0/checkpoints/best-step=176.ckpt"
    (runs / "version_1/metrics_fit.json").write_text("{}")
    assert finetuned_checkpoint(runs) == runs / "version_1/checkpoints/best-step=10.ckpt"
    _run(runs, "version_9")
    _run(runs, "version_10", best=("best-step=3.ckpt",))
    assert finetuned_checkpoint(runs) == runs / "version_10/checkpoints/best-step=3.ckpt"
    _run(runs, "version_11", best=())  # no validation ran: nothing was selected
    _run(runs, "version_12", best=("best-step=1.ckpt", "best-step=2.ckpt"))  # which one? not guessed
    assert finetuned_checkpoint(runs) == runs / "version_10/checkpoints/best-step=3.ckpt"


# For every run of the script: the fine-tune as in the `finetuned` fixture of test_aat.py (30
# batches: heads worth ablating), evaluation batches of 32 (the scan scores 4 of them per source
# domain), 2 test batches.
TINY = ["--data.init_args.num_workers", "0",
        "--data.init_args.eval_batch_size", "32", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "30",
        "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2"]


@pytest.mark.slow
def test_demo_aat_makes_the_fine_tuned_start_then_searches_and_tests_from_it(data_root, tmp_path):
    """No fine-tuning run yet: the script runs the fine-tuning demo, then the scan demo from its
    best checkpoint; the scan says what it chose and the masked model is tested."""
    script = [sys.executable, str(REPO / "experiments/demo_aat.py"), "--strategies", "scan", "--", *TINY]
    result = subprocess.run(script,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = (tmp_path / "runs/rotated_digits/finetune/version_0/checkpoints").glob("best-*.ckpt")
    said = result.stdout.splitlines()
    assert said[0].startswith("dg-heads demo-aat: no finished fine-tuning demo in runs/rotated_digits/finetune/")
    assert f"dg-heads demo-aat: aat_scan from {best.relative_to(tmp_path)} (the fine-tuning demo's checkpoint " \
           "selected by val/acc)" in said
    aat = tmp_path / "runs/rotated_digits/aat_scan/version_0"
    config = yaml.safe_load((aat / "config.yaml").read_text())
    assert config["model"]["init_args"]["init_checkpoint"] == str(best.relative_to(tmp_path))
    assert config["test_after_fit"] is True
    search = [line for line in said if line.startswith(("dg-heads: AAT scan", "dg-heads: source validation"))]
    assert search and search[0].startswith("dg-heads: AAT scan"), said  # a trained start: no all-equal warning
    assert not [line for line in result.stderr.splitlines() if line.startswith("warning: AAT")]
    held_out = r"75\s+\| held out \(test\)\s+\| \d+\.\d\d\s+\| 64\s*"  # 2 test batches of 32
    tables = [i for i, line in enumerate(said) if re.fullmatch(held_out, line)]
    assert tables and tables[-1] > said.index(search[0]), said  # the masked model's table, after the search
    metrics = (aat / "metrics_test.json").read_text()
    assert '"test/acc/75"' in metrics and '"val/acc"' in metrics
    assert len(list((tmp_path / "runs/rotated_digits/finetune").iterdir())) == 1  # the fine-tune ran once
