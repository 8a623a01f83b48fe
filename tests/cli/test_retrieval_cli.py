"""Retrieval as a task, through the CLI a user runs: zero-shot recall equal to CLIP_benchmark's,
2 DDP processes equal to 1, fine-tuning selected by `val/rsum`, AAT scoring by recall, and the
methods that do not apply refusing in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, REPO, run_cli, run_main

pytestmark = pytest.mark.slow

# CLIP_benchmark 1.6.2's `zeroshot_retrieval.evaluate` on the model and data of
# `test_zero_shot_recalls_equal_clip_benchmarks` (percent), from tests/cli/clip_benchmark_reference.py:
#   PYTHONPATH=/tmp/cb:. python tests/cli/clip_benchmark_reference.py
CLIP_BENCHMARK = {"i2t_r1": 1.0, "i2t_r10": 9.0, "i2t_r5": 5.0, "t2i_r1": 1.4, "t2i_r10": 10.0, "t2i_r5": 4.4}
RECALLS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


def configs(method: str) -> list[str]:
    """digit_captions, the method, the demo preset (tiny CLIP on the CPU), as `make demo-retrieval`."""
    files = [CONFIGS / "data/digit_captions.yaml", CONFIGS / f"method/{method}.yaml", CONFIGS / "trainer/demo.yaml"]
    return [a for f in files for a in ("--config", str(f))] + ["--data.init_args.num_workers", "0"]


def metrics(folder: Path, stage: str = "test") -> dict:
    return json.loads(next(folder.rglob(f"metrics_{stage}.json")).read_text())


def test_zero_shot_recalls_equal_clip_benchmarks(tmp_path):
    """`lightning test` with the zero-shot config on retrieval data prints the recall table and writes
    `metrics_test.json`: CLIP_benchmark's figures on the same model and data, RSUM their sum."""
    result = run_cli("test", *configs("zero_shot"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dataset        | split | images | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | RSUM" \
        in result.stdout, result.stdout[-2000:]
    assert "digit_captions | test  | 100    | 1.00    | 5.00    | 9.00     | 1.40    | 4.40    | 10.00    | 30.80" \
        in result.stdout, result.stdout[-2000:]
    got = metrics(tmp_path / "runs" / "digit_captions" / "zero_shot")
    for name, value in CLIP_BENCHMARK.items():
        assert got[f"test/{name}"] == pytest.approx(value, abs=1e-4), name
    assert got["test/rsum"] == pytest.approx(sum(CLIP_BENCHMARK.values()), abs=1e-3)
    assert got["test/n/digit_captions"] == 100


def test_two_ddp_processes_give_the_one_process_figures(tmp_path):
    """AAT's scan then the test of its mask, 1 process and 2 (gloo), on 23 images a dataset (an odd
    number: uneven shares), two test datasets: the same head-importance map (each mask's validation
    RSUM gathered over the processes) and the same recalls, per dataset and their mean, every image
    scored once."""
    args = [*configs("aat_scan"), "--data.init_args.max_images", "23", "--data.init_args.eval_batch_size", "1",
            "--data.init_args.batch_size", "8", "--model.init_args.search.max_scoring_batches", "23",
            "--data.init_args.test", json.dumps(["digit_captions", {"name": "held", "dataset": "digit_captions",
                                                                    "split": "val"}]), "--test_after_fit", "true"]
    (tmp_path / "one").mkdir()
    one = run_cli("fit", *args, cwd=tmp_path / "one", timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    (tmp_path / "two").mkdir()
    two = run_cli("fit", *args, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--ddp_timeout", "0:01:00",
                  cwd=tmp_path / "two", timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    maps = [next((tmp_path / n).rglob("head_importance.csv")).read_text() for n in ("one", "two")]
    assert maps[0] == maps[1]
    assert any(float(v) != 0 for line in maps[0].splitlines()[1:] for v in line.split(",")[1:])  # masks differ
    first, second = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    keys = [f"test/{d}/{n}" for d in ("digit_captions", "held") for n in [*RECALLS, "rsum"]]
    keys += [f"test/{n}" for n in [*RECALLS, "rsum"]] + ["val/rsum"]
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    assert first["test/n/digit_captions"] == second["test/n/digit_captions"] == 23
    assert first["test/n/held"] == second["test/n/held"] == 23
    assert first["test/rsum"] == pytest.approx((first["test/digit_captions/rsum"] + first["test/held/rsum"]) / 2)
    search = json.loads(next((tmp_path / "two").rglob("search_cost.json")).read_text())
    assert search["processes"] == 2 and search["scoring_images"] == 23


def test_finetune_trains_with_the_contrastive_loss_and_selects_by_val_rsum(tmp_path):
    """Fine-tuning on retrieval data: the contrastive loss logged, checkpoints selected by `val/rsum`,
    `--test_after_fit` testing the selected one (its val and test rows in one table)."""
    result = run_cli("fit", *configs("finetune"), "--data.init_args.max_images", "64", "--data.init_args.batch_size",
                     "16", "--trainer.max_epochs", "2", "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import torch

    best = next((tmp_path / "runs" / "digit_captions" / "finetune").rglob("best-*.ckpt"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    callbacks = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint") and "val/rsum" in k]
    assert callbacks and callbacks[0]["best_model_path"].endswith(best.name)
    assert any(k.startswith("clip.transformer.") for k in checkpoint["state_dict"])  # the text tower trained too
    got = metrics(tmp_path / "runs", "test")
    assert {"val/rsum", "test/rsum"} <= set(got)
    assert result.stdout.count("| RSUM") == 1  # one table: the selected checkpoint's val and test rows
    assert "digit_captions | val " in result.stdout and "digit_captions | test " in result.stdout


def test_demo_retrieval_zero_shot_then_aat_from_its_fine_tuned_model(tmp_path):
    """`make demo-retrieval` (experiments/demo_retrieval.py), small: the zero-shot table, a fine-tune
    (none finished yet), then AAT's scan from the checkpoint it selected by val/rsum (a retrieval
    checkpoint loads as `init_checkpoint`: both towers trained), which says what it ablates and its
    validation RSUM without and with it, and the masked model's val and test recall."""
    tiny = ["--data.init_args.max_images", "32", "--data.init_args.batch_size", "16", "--trainer.max_epochs", "1"]
    script = [sys.executable, str(REPO / "experiments/demo_retrieval.py"), "--", *tiny]
    result = subprocess.run(script, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout.replace("\r", "\n").splitlines()
    (best,) = (tmp_path / "runs/digit_captions/finetune/version_0/checkpoints").glob("best-*.ckpt")
    assert f"dg-heads demo-retrieval: aat_scan from {best.relative_to(tmp_path)} (the fine-tuned checkpoint " \
           "selected by val/rsum)" in said
    search = [line for line in said if line.startswith("dg-heads: validation RSUM")]
    assert len(search) == 1 and re.fullmatch(r"dg-heads: validation RSUM [\d.]+ without the mask, [\d.]+ with it "
                                            r"\(\d+ masks scored\)", search[0]), said[-20:]
    tables = [i for i, line in enumerate(said) if line.startswith("digit_captions | test  | 32 ")]
    assert len(tables) == 3 and tables[-1] > said.index(search[0])  # zero-shot, fine-tune, AAT (after the search)
    config = yaml.safe_load((tmp_path / "runs/digit_captions/aat_scan/version_0/config.yaml").read_text())
    assert config["model"]["init_args"]["init_checkpoint"] == str(best.relative_to(tmp_path))


@pytest.mark.parametrize("method, expected", [
    ("linear_probe", "error: model.init_args.mode: mode linear_probe trains a classifier over classes"),
    ("hap", "error: model.init_args.gating.mmd_weight: HAP's MMD aligns the source domains"),
])
def test_a_method_that_does_not_apply_refuses_retrieval_in_one_line(method, expected, tmp_path):
    result = run_main("fit", *configs(method), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
