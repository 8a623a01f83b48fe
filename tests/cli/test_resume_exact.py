"""A run stopped mid-epoch (SIGKILL right after a mid-epoch `last.ckpt`) and resumed with
`--ckpt_path last` ends exactly as a run never stopped: same batches (each seen once), same
random augmentations, same weights bit for bit, same metrics; in one process and under 2-process DDP."""

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import demo_configs, run_cli


class BatchLog(Callback):
    """Appends `global_step digest` of every training batch this rank trains on to `path.<rank>`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digest = hashlib.sha256()
        for name, (images, labels) in batch.items():
            digest.update(name.encode())
            digest.update(images.cpu().numpy().tobytes())
            digest.update(labels.cpu().numpy().tobytes())
        with open(f"{self.path}.{trainer.global_rank}", "a") as file:
            file.write(f"{trainer.global_step} {digest.hexdigest()}\n")


class KillAt(Callback):
    """SIGKILL (no chance to save anything) at the start of the step after `step` steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# 2 source domains (0 and 15 degrees) x 1437 images, 32 a domain a step, epochs of 4 steps
# (limit_train_batches: a window of each domain's stream, as at full length); validation (and so
# `last.ckpt`) every 3 steps, mid-epoch, the last at step 9; killed at the start of step 5 (6 steps
# trained, 3 of them lost), resumed from step 3, the run crosses an epoch boundary. DomainBed's
# random augmentation: its random state must match too.
STEPS = 9
RUN = ["--trainer.max_steps", str(STEPS), "--trainer.max_epochs", "-1", "--trainer.val_check_interval", "3",
       "--trainer.check_val_every_n_epoch", "null", "--trainer.limit_val_batches", "1",
       "--trainer.limit_test_batches", "1", "--trainer.log_every_n_steps", "1",
       "--data.init_args.test_domains", "[30, 45, 60, 75]", "--data.init_args.batch_size_per_domain", "32",
       "--trainer.limit_train_batches", "4",
       "--data.init_args.eval_batch_size", "64", "--data.init_args.train_augment", "domainbed",
       "--test_after_fit", "true", "--ckpt_path", "last"]


def _run(folder: Path, *extra: str, cwd: Path):
    return run_cli("fit", *demo_configs("finetune"), *RUN, "--trainer.default_root_dir", str(folder),
                   "--trainer.logger.init_args.save_dir", str(folder), "--trainer.logger.init_args.name", "",
                   "--trainer.logger.init_args.version", "0",
                   f"--trainer.callbacks+={__name__}.BatchLog", f"--trainer.callbacks.path={folder / 'batches'}",
                   *extra, cwd=cwd, timeout=900)


def _steps(path: Path) -> list[tuple[int, str]]:
    return [(int(step), digest) for step, digest in (line.split() for line in path.read_text().splitlines())]


def _assert_resumed_exactly(tmp_path, extra: list[str], ranks: int, kill_at: int, checkpoint_step: int,
                            requeue: bool = False):
    """`kill_at`: SIGKILL at the start of that step; with `requeue`, SLURM's requeue signal reaches
    rank 1 alone after step `kill_at` and every rank checkpoints at the next step every
    `log_every_n_steps` (`dg_heads.callbacks.RequeueOnSignal`), then stops."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    done = _run(whole, *extra, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    if requeue:
        stop = ["--trainer.callbacks+=tests.ddp_probes.SignalSelf", "--trainer.callbacks.rank=1",
                f"--trainer.callbacks.step={kill_at}"]
    else:
        stop = [f"--trainer.callbacks+={__name__}.KillAt", f"--trainer.callbacks.step={kill_at}"]
    killed = _run(stopped, *extra, *stop, cwd=tmp_path)
    assert killed.returncode == (143 if requeue else -signal.SIGKILL), killed.stderr[-3000:]
    last = next(stopped.rglob("hpc_ckpt_*.ckpt")) if requeue else stopped / "version_0/checkpoints/last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == checkpoint_step
    # batches whose start the stopped run logged: a requeued run stops at the start of the batch after
    # its checkpoint (that step's logs written), a killed one at the start of `kill_at`; both untrained
    trained = checkpoint_step + 1 if requeue else kill_at + 1
    for rank in range(ranks):  # a killed run trained past its checkpoint: those steps are lost
        assert [s for s, _ in _steps(stopped / f"batches.{rank}")] == list(range(trained))
        (stopped / f"batches.{rank}").rename(stopped / f"killed.{rank}")

    resumed = _run(stopped, *extra, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at global step {checkpoint_step}" in resumed.stdout, resumed.stdout[-2000:]
    for rank in range(ranks):
        reference = _steps(whole / f"batches.{rank}")
        assert [s for s, _ in reference] == list(range(STEPS))
        # each batch seen once: the resumed process starts at the checkpoint's step with the batch the
        # uninterrupted run trained on there, and goes on as it did, over the epoch boundary
        assert _steps(stopped / f"batches.{rank}") == reference[checkpoint_step:]
        assert _steps(stopped / f"killed.{rank}") == reference[:trained]

    ours = torch.load(stopped / "version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    theirs = torch.load(whole / "version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ours["global_step"] == theirs["global_step"] == STEPS
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key  # bit for bit
    best = "best_model_score"
    scores = [[v[best] for k, v in ckpt["callbacks"].items() if "val/acc" in k] for ckpt in (ours, theirs)]
    assert scores[0] == scores[1] and scores[0][0] is not None
    test = [json.loads((f / "version_0/metrics_test.json").read_text()) for f in (stopped, whole)]
    assert test[0] == test[1] and "test/acc/75" in test[0]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_exactly(data_root, tmp_path):
    # one loader worker: the augmentation of an image must not depend on which process read it, or when
    _assert_resumed_exactly(tmp_path, ["--data.init_args.num_workers", "1"], ranks=1, kill_at=5, checkpoint_step=3)


@pytest.mark.slow
def test_a_two_process_ddp_run_killed_mid_epoch_resumes_exactly(data_root, tmp_path):
    # the checkpoint at step 3 is in the middle of epoch 0
    _assert_resumed_exactly(tmp_path, ["--trainer.devices", "2", "--trainer.strategy", "ddp",
                                       "--data.init_args.num_workers", "0"],
                            ranks=2, kill_at=5, checkpoint_step=3)


@pytest.mark.slow
def test_a_two_process_ddp_run_requeued_mid_epoch_resumes_exactly(data_root, tmp_path):
    # the signal reaches rank 1 after step 4; flags are read every 5 steps: all ranks checkpoint at
    # step 5, in the middle of epoch 1 (no validation there), and stop;
    # `--ckpt_path last` resumes from that `hpc_ckpt_1.ckpt`
    _assert_resumed_exactly(tmp_path, ["--trainer.devices", "2", "--trainer.strategy", "ddp",
                                       "--data.init_args.num_workers", "0", "--trainer.log_every_n_steps", "5"],
                            ranks=2, kill_at=4, checkpoint_step=5, requeue=True)
