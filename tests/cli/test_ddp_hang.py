"""A DDP run whose processes part ways (a collective on some ranks only) ends with one `error:` line
per rank within `--ddp_timeout`, naming where it waited: it does not sit until the job's time limit.
(40 s here: it is also the time the processes have to meet, and this machine may be loaded.)"""

from __future__ import annotations

import time

import pytest

from tests.conftest import demo_configs, run_cli

pytestmark = pytest.mark.slow


def test_a_collective_on_one_rank_ends_as_an_error_within_the_timeout(data_root, tmp_path):
    started = time.monotonic()
    result = run_cli("fit", *demo_configs("finetune"), "--data.init_args.root", str(data_root),
                     "--data.init_args.num_workers", "0", "--trainer.max_steps", "4",
                     "--trainer.devices", "2", "--trainer.strategy", "ddp", "--ddp_timeout", "0:00:40",
                     "--trainer.callbacks+=tests.ddp_probes.RankZeroCollective", cwd=tmp_path, timeout=240)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.stderr[-3000:]
    assert any("a DDP collective did not complete" in line and "--ddp_timeout" in line for line in errors), errors
    assert any("ddp_probes.py" in line and "on_train_batch_end" in line for line in errors), errors
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert elapsed < 200, f"took {elapsed:.0f} s"


def test_the_gpu_preset_timeout_reaches_the_ddp_strategy(data_root, tmp_path, monkeypatch):
    """`--trainer.devices 2 --trainer.strategy ddp` over the GPU preset (as its comment says) gets
    the preset's `ddp_timeout`; a timeout the strategy's own config sets wins."""
    from datetime import timedelta

    from dg_heads.lightning_cli import DGHeadsCLI
    from tests.conftest import gpu_configs

    monkeypatch.chdir(tmp_path)
    base = [*gpu_configs("pacs", "finetune"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
            "--data.init_args.root", str(data_root), "--data.init_args.test_domains", "[art_painting]",
            "--model.init_args.clip.model_name", "dg-tiny-vit",
            "--model.init_args.clip.pretrained", "null"]
    cli = DGHeadsCLI(args=[*base, "--trainer.strategy", "ddp"], run=False)
    assert cli.trainer.strategy._timeout == timedelta(minutes=15)
    own = {"class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {"timeout": "0:02:00"}}
    import json

    cli = DGHeadsCLI(args=[*base, "--trainer.strategy", json.dumps(own)], run=False)
    assert cli.trainer.strategy._timeout == timedelta(minutes=2)
