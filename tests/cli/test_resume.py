"""`fit --ckpt_path last` on an ordinary run (not a sweep job with its fixed folder)."""

import json

import pytest

from tests.conftest import QUICK, demo_configs, run_cli

pytestmark = pytest.mark.slow


def test_ckpt_path_last_continues_the_newest_unfinished_run_of_the_run_folder(data_root, tmp_path):
    folder = tmp_path / "runs/rotated_digits/finetune"
    args = ["fit", *demo_configs("finetune"), *QUICK, "--trainer.limit_train_batches", "2", "--ckpt_path", "last"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no unfinished run in runs/rotated_digits/finetune" in first.stdout  # nothing to resume: it says so
    assert "starting afresh" in first.stdout
    # a run killed after its first epoch's checkpoint: `metrics_fit.json` is written only when fit ends
    (folder / "version_0/metrics_fit.json").unlink()
    second = run_cli(*args, "--trainer.max_epochs", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing runs/rotated_digits/finetune/version_0" in second.stdout
    assert "resuming from" in second.stdout and "version_0/checkpoints/last.ckpt at global step 2" in second.stdout
    assert not (folder / "version_1").exists()  # not a fresh run in a new folder
    assert json.loads((folder / "version_0/metrics_fit.json").read_text())["global_step"] == 4
