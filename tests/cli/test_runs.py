"""End-to-end runs through the real CLI (`python -m dg_heads` == `lightning` == `dg-heads`)."""

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, QUICK, demo_configs, make_benchmark, run_cli, run_main

pytestmark = pytest.mark.slow


def _version_dir(cwd: Path, name: str) -> Path:
    return cwd / "runs" / "rotated_digits" / name / "version_0"


def test_finetune_fit_then_test_writes_per_domain_metrics(data_root, tmp_path):
    result = run_cli("fit", *demo_configs("finetune"), *QUICK, "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _version_dir(tmp_path, "finetune")
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert {"test/acc", "test/acc/75", "val/acc", "val/acc/0", "val/acc/60"} <= set(metrics)
    assert not any("dataloader_idx" in key for key in metrics)
    assert "held out (test)" in result.stdout and "source (val)" in result.stdout
    assert (run / "config.yaml").exists() and list((run / "checkpoints").glob("best-*.ckpt"))
    splits = json.loads((run / "splits.json").read_text())  # the manifest `dg-heads splits` prints, and the run's
    assert splits["test_domains"] == ["75"] and splits["test_split"] == "all" and len(splits["domains"]) == 6
    assert len(splits["domains"]["0"]["out"]) == 359 and metrics["test/n/75"] == 1797
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "hparams")).Reload()  # the run's HParams session
    assert {"hp/test_acc", "hp/test_acc/75", "hp/val_acc"} <= set(events.Tags()["scalars"])  # HParams tab metrics
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"optim/lr" in hparams and b"data/test_domains" in hparams


def test_zero_shot_validate_test_and_predict(data_root, tmp_path):
    for sub in ("validate", "test", "predict"):
        result = run_cli(sub, *demo_configs("zero_shot"),
                         "--data.init_args.num_workers", "0", cwd=tmp_path)
        assert result.returncode == 0, f"{sub}: {result.stderr[-2000:]}"
    metrics = json.loads((tmp_path / "runs/rotated_digits/zero_shot/version_1/metrics_test.json").read_text())
    with open(tmp_path / "runs/rotated_digits/zero_shot/version_2/predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))  # `predict`'s own record of every held-out image
    assert len(rows) == metrics["test/n/75"] == 1797 and {r["domain"] for r in rows} == {"75"}
    correct = sum(r["label"] == r["predicted"] for r in rows)
    assert 0 < correct < len(rows)  # the check below can tell a wrong accuracy from a right one
    assert metrics["test/acc"] == pytest.approx(correct / len(rows), abs=1e-6)
    assert metrics["test/acc/75"] == pytest.approx(correct / len(rows), abs=1e-6)


def test_zero_shot_fit_says_nothing_to_train(data_root, tmp_path):
    result = run_main("fit", *demo_configs("zero_shot"), *QUICK, cwd=tmp_path)
    assert result.returncode == 2 and "nothing to train" in result.stderr


def test_print_config_resolves_interpolation(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainer:\n  max_epochs: 7\n  max_steps: ${trainer.max_epochs}\n")
    result = run_main("fit", *demo_configs("finetune"), "--config", str(extra), "--print_config",
                      "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1.0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_steps: 7" in result.stdout and "class_path: dg_heads.methods.CLIPBaseline" in result.stdout
    # `1` is one batch and `1.0` all of them, as in Lightning (not both 1.0: Lightning #21259)
    assert "limit_val_batches: 1\n" in result.stdout and "limit_test_batches: 1.0\n" in result.stdout


@pytest.mark.parametrize("case", ["test_domain", "root", "classes", "image", "hub"])
def test_bad_input_is_one_clear_line(case, data_root, tmp_path):
    args = ["test", *demo_configs("zero_shot")]
    pacs = ["--data.init_args.dataset", "pacs", "--data.init_args.root", str(tmp_path),
            "--data.init_args.test_domains", "[sketch]", "--data.init_args.image_size", "32"]
    if case == "test_domain":
        args += ["--data.init_args.test_domains", "[90]"]
        expected = "'90'] not a domain; expected one or more of ['0', '15', '30', '45', '60', '75']"
    elif case == "root":
        args += pacs
        expected = "PACS does not exist"
    elif case == "classes":
        make_benchmark(tmp_path, "pacs", size=4)
        (tmp_path / "PACS/sketch/horse").rename(tmp_path / "PACS/sketch/hrose")
        args += pacs
        expected = "missing ['horse'], extra ['hrose']"
    elif case == "hub":
        args += pacs + ["--data.init_args.hf.name", "someone/pacs-on-the-hub"]
        expected = "cannot load Hugging Face dataset someone/pacs-on-the-hub"
    else:  # an unreadable image, read inside a DataLoader worker process, with bad_images: error
        make_benchmark(tmp_path, "pacs", size=4)
        (tmp_path / "PACS/sketch/dog/000.png").write_bytes(b"\x89PNG truncated")
        args += pacs + ["--data.init_args.num_workers", "1", "--data.init_args.bad_images", "error"]
        expected = "cannot read image " + str(tmp_path / "PACS/sketch/dog/000.png")
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "Original Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_unreadable_images_are_skipped_by_default_and_the_count_reported(tmp_path):
    make_benchmark(tmp_path, "pacs", size=4, per_class=2)
    for bad in ("dog/000.png", "horse/001.png"):
        (tmp_path / "PACS/sketch" / bad).write_bytes(b"\x89PNG truncated")
    result = run_cli("test", *demo_configs("zero_shot"),
                     "--data.init_args.dataset", "pacs", "--data.init_args.root", str(tmp_path),
                     "--data.init_args.test_domains", "[sketch]", "--data.init_args.num_workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped unreadable image " + str(tmp_path / "PACS/sketch/dog/000.png") in result.stderr
    assert "test domain 'sketch': scored 12 of 14 images (2 unreadable, skipped" in result.stderr
    metrics = json.loads((tmp_path / "runs/pacs/zero_shot/version_0/metrics_test.json").read_text())
    assert metrics["test/n/sketch"] == 12


def test_lightning_and_dg_heads_console_scripts_run():
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent  # the environment's scripts, on PATH or not
    for script in ("lightning", "dg-heads"):
        result = subprocess.run([str(bin_dir / script), "fit", "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "--test_after_fit" in result.stdout, result.stderr[-1000:]


def test_two_epochs_of_finetuning_beat_chance_on_the_held_out_domain(data_root, tmp_path):
    result = run_cli("fit", *demo_configs("finetune"), "--trainer.max_epochs", "2",
                     "--data.init_args.num_workers", "0",
                     "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((_version_dir(tmp_path, "finetune") / "metrics_test.json").read_text())
    assert metrics["test/acc/75"] > 0.30  # chance is 0.10 (10 classes)


# ------------------------------------------- TRAINER_DEFAULTS: checkpoints and the run folder
def _built(args: list[str], tmp_path, monkeypatch):
    """The CLI with its trainer built, as `lightning fit ARGS` makes it (nothing runs)."""
    import sys

    from dg_heads.lightning_cli import DGHeadsCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dg-heads", *args])
    return DGHeadsCLI(run=False)


@pytest.mark.parametrize("args, folder", [
    (demo_configs("finetune"), "runs/rotated_digits/finetune"),
    (demo_configs("aat_bp"), "runs/rotated_digits/aat_bp"),
    ([*demo_configs("hap"), "--config", str(CONFIGS / "method/hap_variants/ha_lora_only.yaml")],
     "runs/rotated_digits/ha_lora"),
    ([*demo_configs("hap"), "--data.init_args.dataset", "PACS", "--data.init_args.test_domains", "[photo]"],
     "runs/pacs/hap"),
    ([*demo_configs("finetune"), "--trainer.logger.init_args.save_dir", "out/{dataset}",
      "--trainer.logger.init_args.name", "mine"], "out/rotated_digits/mine"),
    ([*demo_configs("finetune"), "--trainer.logger.init_args.save_dir", "elsewhere"], "elsewhere/finetune"),
])
def test_the_run_folder_is_named_from_what_runs(args, folder, tmp_path, monkeypatch):
    cli = _built(args, tmp_path, monkeypatch)
    assert Path(cli.trainer.logger.log_dir) == Path(folder) / "version_0"


def test_a_config_adding_callbacks_keeps_the_default_checkpoints(tmp_path, monkeypatch):
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
                     "      init_args: {monitor: val/acc, mode: max}\n")
    cli = _built([*demo_configs("finetune"), "--config", str(extra)], tmp_path, monkeypatch)
    kinds = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "EarlyStopping" in kinds and kinds.count("ModelCheckpoint") == 2 and "LearningRateMonitor" in kinds
    best, last = cli.trainer.checkpoint_callbacks
    assert (best.monitor, best.mode, best.filename, last.filename) == ("val/acc", "max", "best-{step}", "last")
    again = _built(demo_configs("finetune"), tmp_path, monkeypatch)  # a second run in this process
    assert again.trainer.checkpoint_callback is not best  # gets checkpoints of its own (no best score carried over)
