"""SLURM's requeue signal under DDP: every process checkpoints at the same step, the run stops with
exit code 143, and the resumed run ends where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import demo_configs, run_cli

pytestmark = pytest.mark.slow

# 8 steps in epochs of 4; the signal reaches rank 1 alone after step 3; flags are read every 2 steps
RUN = ["--data.init_args.num_workers", "0", "--trainer.max_steps", "8", "--trainer.max_epochs", "-1",
       "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2",
       "--trainer.devices", "2", "--trainer.strategy", "ddp", "--ddp_timeout", "0:01:00"]


def _trained(folder: Path) -> dict[str, torch.Tensor]:
    (last,) = folder.rglob("last.ckpt")
    return torch.load(last, map_location="cpu", weights_only=False)["state_dict"]


def test_the_requeue_signal_on_one_rank_checkpoints_all_at_one_step(data_root, tmp_path):
    args = [*demo_configs("finetune"), "--data.init_args.root", str(data_root), *RUN]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stopped = run_cli("fit", *args, "--trainer.callbacks+=tests.ddp_probes.SignalSelf",
                      "--trainer.callbacks.rank=1", "--trainer.callbacks.step=3", cwd=tmp_path / "a", timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    said = [line for line in stopped.stdout.splitlines() if "dg-heads: signal SIGUSR1" in line]
    assert len(said) == 1 and "at global step 4" in said[0], stopped.stdout[-2000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    (hpc,) = (tmp_path / "a").rglob("hpc_ckpt_*.ckpt")
    assert hpc.parent == tmp_path / "a/runs/rotated_digits/finetune/version_0/checkpoints"  # the run's own folder
    assert torch.load(hpc, map_location="cpu", weights_only=False)["global_step"] == 4

    resumed = run_cli("fit", *args, "--ckpt_path", "last", cwd=tmp_path / "a", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # from step 4 (the requeue checkpoint, or the epoch-end one written at the same step after it)
    assert "continuing" in resumed.stdout and "at global step 4" in resumed.stdout, resumed.stdout[-2000:]
    never_stopped = run_cli("fit", *args, cwd=tmp_path / "b", timeout=300)
    assert never_stopped.returncode == 0, never_stopped.stderr[-3000:]
    ours, reference = _trained(tmp_path / "a" / "runs" / "rotated_digits" / "finetune" / "version_0"), \
        _trained(tmp_path / "b")
    assert ours.keys() == reference.keys()
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name


def test_under_slurm_the_cli_turns_lightnings_in_handler_requeue_off(data_root, tmp_path, monkeypatch):
    """Lightning's SLURM handler checkpoints inside the signal handler; under SLURM the CLI's
    trainer has it off (RequeueOnSignal does the work) and keeps its atomic checkpoint IO."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from dg_heads.lightning_cli import DGHeadsCLI
    from dg_heads.resume import AtomicCheckpointIO

    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "dgtest", "SLURM_NTASKS_PER_NODE": "1",
                        "SLURM_NNODES": "1", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                        "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    cli = DGHeadsCLI(args=[*demo_configs("finetune"), "--data.init_args.root", str(data_root)], run=False)
    environment = cli.trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_the_requeue_signal_during_a_test_stage_requeues_at_its_end(data_root, tmp_path):
    """Outside training (`test`, or `--test_after_fit`'s evaluation) the signal is not lost and does
    not kill the job: the stage ends, the job is requeued (here: said), exit code 143."""
    result = run_cli("test", *demo_configs("zero_shot"), "--data.init_args.root", str(data_root),
                     "--data.init_args.num_workers", "0", "--trainer.limit_test_batches", "2",
                     "--trainer.callbacks+=tests.ddp_probes.SignalSelf", "--trainer.callbacks.during_test=true",
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 143, result.stderr[-3000:]
    said = [line for line in result.stdout.splitlines() if "dg-heads: signal SIGUSR1 -> " in line]
    assert len(said) == 1 and "nothing requeued" in said[0] and "checkpoint" not in said[0], result.stdout[-2000:]
