"""Through a real single-node SLURM cluster (started by tests/slurm_cluster.py):
an array sweep then `dg-heads collect`, a 2-task `srun` DDP run, and a requeue mid-run.

Skipped with the reason where SLURM cannot be started, unless DG_HEADS_REQUIRE_SLURM=1 (CI).
`make test-slurm` runs this file alone."""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import slurm_cluster as local_cluster
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]  # one cluster, one worker
LIGHTNING = str(Path(sys.executable).parent / "lightning")
FAST = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.init_args.num_workers", "0",
        "--data.init_args.eval_batch_size", "64"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = local_cluster.why_unavailable()
    if reason:
        if os.environ.get("DG_HEADS_REQUIRE_SLURM") == "1":
            pytest.fail(f"DG_HEADS_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    env = local_cluster.start(folder)
    try:
        yield {**os.environ, **env, "PYTHONPATH": str(REPO)}
    finally:
        local_cluster.stop(folder)


def _sweep(tmp_path, env, domains, args, seeds=(0,), slurm="{}", config="finetune"):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: dgtest
runs_dir: {tmp_path / 'runs'}
configs:
  - {REPO}/configs/data/rotated_digits.yaml
  - "{REPO}/configs/method/{{method}}.yaml"
  - {REPO}/configs/trainer/demo.yaml
methods:
  {config}:
datasets:
  rotated_digits: {json.dumps(domains)}
trial_seeds: {json.dumps(list(seeds))}
args: {json.dumps(args)}
slurm: {slurm}
""")
    result = run_cli("sweep", str(spec), "--command", LIGHTNING, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return spec, result.stdout


def _sbatch(stdout: str, env: dict, wait: bool) -> subprocess.CompletedProcess:
    argv = shlex.split(stdout.strip().splitlines()[-1])
    assert argv[0] == "sbatch"
    argv = [argv[0], *(["--wait"] if wait else ["--parsable"]), *argv[1:]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def _run_dirs(tmp_path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "runs").rglob("job.json"))


def test_array_sweep_then_collect_gives_the_table(slurm, data_root, tmp_path):
    spec, stdout = _sweep(tmp_path, slurm, ["60", "75"], FAST + ["--trainer.limit_test_batches", "1"], seeds=(0, 1))
    assert "4 jobs" in stdout and "--array=0-3" in stdout
    result = _sbatch(stdout, slurm, wait=True)
    logs = "".join(p.read_text()[-1500:] for p in (tmp_path / "runs").glob("slurm-*"))
    assert result.returncode == 0, result.stderr + logs
    for run in _run_dirs(tmp_path):  # each task wrote only into its own folder
        job = json.loads((run / "job.json").read_text())
        assert sorted(p.name for p in run.iterdir()) == ["done", "job.json", "version_0"]
        config = (run / "version_0" / "config.yaml").read_text()
        assert f"- '{job['test_domain']}'" in config and f"trial_seed: {job['trial_seed']}" in config

    collected = run_cli("collect", str(tmp_path / "runs"), cwd=tmp_path, env=slurm)
    assert collected.returncode == 0, collected.stderr[-2000:]
    row = next(line for line in collected.stdout.splitlines() if line.startswith("| finetune |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 4 and all(" ± " in c for c in cells[1:3]) and float(cells[3]) >= 0
    assert (tmp_path / "runs/results/rotated_digits.tex").exists()
    assert "incomplete" not in collected.stdout

    again = run_cli("sweep", str(spec), "--command", LIGHTNING, "--no-check", cwd=tmp_path, env=slurm)
    assert "4 done, 0 to run" in again.stdout and "sbatch" not in again.stdout


def test_two_task_srun_runs_hap_ddp_bf16(slurm, data_root, tmp_path):
    """HAP under DDP over two `srun` tasks (gloo, bf16-mixed): MMD over all domains of the global batch,
    and exact evaluation: 1,797 test images over 2 ranks, none repeated by padding (1,798) or dropped."""
    _, stdout = _sweep(tmp_path, slurm, ["75"], FAST + ["--trainer.limit_train_batches", "4",
                       "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "bf16-mixed"],
                       slurm="{ntasks_per_node: 2}", config="hap")
    assert "--ntasks-per-node=2" in stdout
    result = _sbatch(stdout, slurm, wait=True)
    log = "".join(p.read_text() for p in (tmp_path / "runs").glob("slurm-*.out"))
    assert result.returncode == 0, result.stderr + log[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    (run,) = _run_dirs(tmp_path)
    metrics = json.loads((run / "done").read_text())
    assert metrics["global_step"] == 4 and metrics["test/n/75"] == 1797 and 0.0 <= metrics["test/acc/75"] <= 1.0


def test_requeue_mid_run_resumes_from_the_checkpoint_without_double_logging(slurm, data_root, tmp_path):
    progress = tmp_path / "step.txt"
    args = FAST + ["--trainer.limit_train_batches", "24", "--trainer.log_every_n_steps", "1",
                   "--trainer.limit_test_batches", "1", "--trainer.callbacks+=tests.poison.SlowSteps",
                   "--trainer.callbacks.seconds=0.4", f"--trainer.callbacks.progress_file={progress}"]
    _, stdout = _sweep(tmp_path, slurm, ["75"], args)
    job_id = _sbatch(stdout, slurm, wait=False).stdout.strip().split(";")[0]
    deadline = time.time() + 300
    def reached() -> int:  # read once: the file may be mid-rewrite (empty) between two reads
        text = progress.read_text().strip() if progress.exists() else ""
        return int(text) if text.isdigit() else -1

    while time.time() < deadline and reached() < 8:
        time.sleep(0.2)
    assert progress.exists(), "the job never started training"
    # what SLURM sends before the time limit (--signal=SIGUSR1@300): all ranks checkpoint, rank 0 requeues
    subprocess.run(["scancel", "--signal=USR1", f"{job_id}_0"], env=slurm, check=True, timeout=30)
    (run,) = _run_dirs(tmp_path)
    while time.time() < deadline and not (run / "done").exists():
        time.sleep(0.5)
    log = "".join(p.read_text() for p in (tmp_path / "runs").glob("slurm-*.out"))
    assert (run / "done").exists(), log[-4000:]
    assert "restart 1" in log, log[-3000:]  # the same array task ran again
    resumed = [line for line in log.splitlines() if line.startswith("dg-heads: resuming from")]
    assert len(resumed) == 1 and "hpc_ckpt_1.ckpt" in resumed[0], log[-3000:]
    step = int(resumed[0].rsplit(" ", 1)[1])
    assert step >= 8
    assert json.loads((run / "done").read_text())["global_step"] == 24  # the global step continued

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "version_0")).Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 24  # nothing logged twice, nothing lost
    assert len(list((run / "version_0").glob("events.out.tfevents.*"))) >= 2  # both processes logged there
