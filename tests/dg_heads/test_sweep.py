"""Sweeps (job lists, idempotent folders), result collection, and resuming a killed run."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from dg_heads.cli import main as cli_main
from dg_heads.collect import collect, mean_se
from dg_heads.errors import DGHeadsError
from dg_heads.sweep import jobs_of, load_spec, sbatch_command, write_sweep
from dg_heads.sweep import main as sweep_main
from tests.conftest import QUICK, REPO, demo_configs, make_benchmark, run_cli

# a method's composition: the demo (tiny CLIP on the CPU, the preset last) and a GPU benchmark run
DEMO_FINETUNE = ("[{repo}/configs/data/rotated_digits.yaml, {repo}/configs/method/finetune.yaml, "
                 "{repo}/configs/trainer/demo.yaml]")
DEMO_LORA = DEMO_FINETUNE.replace("finetune", "lora")
GPU_HAP = "[{repo}/configs/trainer/gpu.yaml, {repo}/configs/data/pacs.yaml, {repo}/configs/method/hap.yaml]"
SPEC = """
runs_dir: {runs}
methods:
  finetune: """ + DEMO_FINETUNE + """
  lora: {{configs: """ + DEMO_LORA + """, args: [--trainer.max_epochs, "2"]}}
datasets:
  pacs: [photo, sketch]
trial_seeds: [0, 1]
grid:
  model.init_args.optim.lr: [1.0e-3, 1.0e-4]
args: [--trainer.max_epochs, "1"]
slurm: {{partition: gpu, gpus_per_node: 4, nodes: 2, time: "12:00:00", parallel: 8}}
"""


def _spec(tmp_path, text=SPEC):
    path = tmp_path / "spec.yaml"
    path.write_text(text.format(runs=tmp_path / "runs", repo=REPO))
    return load_spec(path)


def test_sweep_is_the_full_product_with_stable_folders(tmp_path):
    spec = _spec(tmp_path)
    jobs_file, jobs = write_sweep(spec, tmp_path / "runs")
    assert len(jobs) == 2 * 2 * 2 * 2  # methods x test domains x trial seeds x lrs
    assert len({j.run_dir for j in jobs}) == 16 and len(jobs_file.read_text().splitlines()) == 16
    again = jobs_of(_spec(tmp_path), tmp_path / "runs")
    assert [j.run_dir for j in again] == [j.run_dir for j in jobs]  # relaunching maps to the same folders
    argv = shlex.split(jobs_file.read_text().splitlines()[-1])
    assert argv[:4] == [sys.executable, "-m", "dg_heads", "fit"]
    assert argv[argv.index("--model.init_args.optim.lr") + 1] == "0.0001"
    run = jobs[-1].run_dir
    assert argv[argv.index("--trainer.default_root_dir") + 1] == str(run)
    assert argv[argv.index("--done_marker") + 1] == str(run / "done") and "--ckpt_path" in argv
    assert argv.count("--trainer.max_epochs") == 2 and argv[-argv[::-1].index("--trainer.max_epochs")] == "2"
    assert json.loads((run / "job.json").read_text())["method"] == "lora"
    command = sbatch_command(spec, jobs_file, [0, 1, 2, 5, 7, 8])
    assert "--array=0-2,5,7-8%8" in command and "--ntasks-per-node=4" in command and "--gpus-per-node=4" in command
    assert "--nodes=2" in command and command.endswith(f"dg_heads/slurm/array.sbatch {jobs_file}")
    # DDP spans what srun starts: 2 nodes x 4 processes
    assert argv[argv.index("--trainer.num_nodes") + 1] == "2" and argv[argv.index("--trainer.devices") + 1] == "4"
    with pytest.raises(DGHeadsError, match=r"method 'lora' sets --trainer.devices 2, but the slurm section starts 4"):
        jobs_of(_spec(tmp_path, SPEC.replace('"2"]}}', '"2", --trainer.devices, "2"]}}')), tmp_path / "runs")


def test_random_draws_are_domainbed_style_and_reproducible(tmp_path):
    text = SPEC.replace("grid:\n  model.init_args.optim.lr: [1.0e-3, 1.0e-4]",
                        "random:\n  n: 3\n  seed: 7\n  space:\n"
                        "    model.init_args.optim.lr: {{log10_uniform: [-5, -3]}}")
    jobs = jobs_of(_spec(tmp_path, text), tmp_path / "runs")
    lrs = [j.hparams["model.init_args.optim.lr"] for j in jobs if j.method == "finetune" and j.test_domain == "photo"]
    assert len(lrs) == 6 and all(1e-5 <= lr <= 1e-3 for lr in lrs) and len(set(lrs)) == 6
    assert lrs == [j.hparams["model.init_args.optim.lr"] for j in jobs_of(_spec(tmp_path, text), tmp_path / "runs")
                   if j.method == "finetune" and j.test_domain == "photo"]


def test_the_example_pacs_sweep_expands_as_documented(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # its config paths are relative to the repository, where jobs start
    jobs = jobs_of(load_spec(REPO / "experiments/sweeps/pacs.yaml"), tmp_path)
    per_method = {m: sum(j.method == m for j in jobs) for m in ("hap", "lora", "aat_scan")}
    assert per_method == {"hap": 4 * 3 * 2, "lora": 4 * 3 * 2, "aat_scan": 4 * 3}  # aat_scan's own empty grid


def test_bad_spec_names_the_key(tmp_path):
    with pytest.raises(DGHeadsError, match=r"unknown key\(s\) \['trial_seed'\]"):
        _spec(tmp_path, SPEC.replace("trial_seeds:", "trial_seed:"))
    with pytest.raises(DGHeadsError, match=r"pacs has no domain\(s\) \['Photo'\]"):
        _spec(tmp_path, SPEC.replace("[photo, sketch]", "[Photo]"))


def test_the_specs_configs_compose_each_jobs_dataset_and_method(tmp_path, monkeypatch):
    """The spec's `configs` with `{dataset}` / `{method}` filled per job; a method's own list replaces it."""
    monkeypatch.chdir(REPO)
    text = """
configs: [configs/trainer/gpu.yaml, "configs/data/{{dataset}}.yaml", "configs/method/{{method}}.yaml"]
methods:
  finetune:
  lora: {{args: [--trainer.max_steps, "10"]}}
  ha_lora_only: [configs/method/hap.yaml, configs/method/hap_variants/ha_lora_only.yaml]
datasets:
  pacs: [photo]
  vlcs: [SUN09]
slurm: {{gpus_per_node: 1}}
"""
    jobs = jobs_of(_spec(tmp_path, text), tmp_path / "runs")
    assert {(j.method, j.dataset, j.test_domain, tuple(j.configs)) for j in jobs} == {
        ("finetune", "pacs", "photo",
         ("configs/trainer/gpu.yaml", "configs/data/pacs.yaml", "configs/method/finetune.yaml")),
        ("finetune", "vlcs", "SUN09",
         ("configs/trainer/gpu.yaml", "configs/data/vlcs.yaml", "configs/method/finetune.yaml")),
        ("lora", "pacs", "photo", ("configs/trainer/gpu.yaml", "configs/data/pacs.yaml", "configs/method/lora.yaml")),
        ("lora", "vlcs", "SUN09", ("configs/trainer/gpu.yaml", "configs/data/vlcs.yaml", "configs/method/lora.yaml")),
        ("ha_lora_only", "pacs", "photo", ("configs/method/hap.yaml", "configs/method/hap_variants/ha_lora_only.yaml")),
        ("ha_lora_only", "vlcs", "SUN09", ("configs/method/hap.yaml", "configs/method/hap_variants/ha_lora_only.yaml"))}
    for job in jobs:  # the spec's dataset is passed, whatever the config files say
        argv = job.argv()
        assert argv[argv.index("--data.init_args.dataset") + 1] == job.dataset
    with pytest.raises(DGHeadsError, match=r"method 'nope' on pacs: config file\(s\) \[.*'configs/method/nope.yaml'\]"):
        jobs_of(_spec(tmp_path, text.replace("  finetune:\n", "  nope:\n")), tmp_path / "runs")
    with pytest.raises(DGHeadsError, match=r"method 'finetune' needs a list of config files"):
        _spec(tmp_path, text.replace("configs: [configs/trainer", "# [configs/trainer"))


def test_sweep_parses_one_job_per_method_before_anything_is_queued(tmp_path, capsys):
    """A typo in a grid key would fail every array task after its wait in the queue."""
    _spec(tmp_path)  # writes spec.yaml
    sweep_main([str(tmp_path / "spec.yaml"), "--no-preflight"])  # (no PACS copy here)
    assert "16 to run" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "spec.yaml").read_text().replace("optim.lr:", "optim.lrr:"))
    with pytest.raises(SystemExit) as stop:  # through the CLI's entry point, as `dg-heads sweep` runs
        cli_main(["sweep", str(bad), "--runs-dir", str(tmp_path / "bad_runs"), "--no-preflight"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    said = re.fullmatch(r"error: sweep: method 'finetune' on pacs does not parse: (.+) \(its first job: (.+)\)\n", err)
    assert said, err
    # The parser's reason names the mistyped key (in jsonargparse's words, which change between
    # versions); the job line alone would name it too, so the reason is checked apart from it.
    assert "lrr" in said[1] and "lrr" in said[2]
    assert not (tmp_path / "bad_runs").exists()  # nothing written that `collect` would list as unfinished


def _finish(job, val, test, step=10):
    version = job.run_dir / "version_0"
    version.mkdir(parents=True, exist_ok=True)
    (version / "metrics_test.json").write_text(json.dumps({"val/acc": val, "test/acc": test, "global_step": step}))
    (job.run_dir / "done").write_text("{}")


def test_collect_selects_by_validation_and_lists_incomplete_runs(tmp_path):
    spec = _spec(tmp_path)
    _, jobs = write_sweep(spec, tmp_path / "runs")
    test_acc = {}
    for job in jobs:
        lr_index = job.hparams_index
        # the lr with the better validation accuracy has the *worse* test accuracy: selection must use val
        val, test = (0.9, 0.5 + 0.1 * job.trial_seed) if lr_index == 0 else (0.8, 0.99)
        if job.method == "lora" and job.test_domain == "sketch" and job.trial_seed == 1 and lr_index == 1:
            (job.run_dir / "version_0").mkdir(parents=True)  # half-written: no done marker, no metrics
            (job.run_dir / "version_0" / "metrics_test.json").write_text('{"val/acc": 0.')
            continue
        _finish(job, val, test)
        test_acc[(job.method, job.test_domain, job.trial_seed)] = 0.5 + 0.1 * job.trial_seed
    tables, incomplete, partial = collect(tmp_path / "runs")
    (table,) = tables
    mean, se = mean_se([0.5, 0.6])
    assert table.rows["finetune"]["photo"] == (mean, se, 2)
    assert round(mean, 6) == 55.0 and round(se, 4) == 3.5355  # std(x) / sqrt(n)
    assert table.rows["lora"]["sketch"][2] == 1  # one trial seed left: marked, not hidden
    md = (tmp_path / "runs/results/pacs.md").read_text()
    assert "| finetune | 55.0 ± 3.5 | 55.0 ± 3.5 | 55.0 |" in md and "50.0 ± 0.0 (1/2 seeds)" in md
    assert "\\pm" in (tmp_path / "runs/results/pacs.tex").read_text()
    assert "finetune,photo,55.0000,3.5355,2" in (tmp_path / "runs/results/pacs.csv").read_text()
    assert len(incomplete) == 1 and "no done marker" in incomplete[0].why
    assert partial == [("lora", "pacs", "sketch", 1)]
    _check_figure(tmp_path / "runs/results/pacs.png", table)


def _check_figure(path, table):
    """The PNG beside the tables, read on its own (not redrawn): a bar per method and test domain
    in the method's colour, heights in the ratio of the means, on one baseline."""
    from tests.dg_heads.test_collect import check_bars

    check_bars(path, {m: [cells[d][0] for d in table.domains if d in cells] for m, cells in table.rows.items()})


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_and_a_finished_one_is_skipped(data_root, tmp_path):
    progress = tmp_path / "step.txt"
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dg_heads", "fit", *demo_configs("finetune"), *QUICK,
            "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4", "--trainer.log_every_n_steps", "1",
            "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
            "--trainer.logger.init_args.name", "", "--trainer.logger.init_args.version", "0",
            "--trainer.limit_test_batches", "2",
            "--trainer.callbacks+=tests.poison.SlowSteps", "--trainer.callbacks.seconds=0.3",
            f"--trainer.callbacks.progress_file={progress}",
            "--test_after_fit", "true", "--ckpt_path", "last", "--done_marker", str(run / "done")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (progress.exists() and progress.read_text()
                                          and int(progress.read_text()) >= 6):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # no chance to save anything: only epoch 0's last.ckpt (step 4) survives
    first.wait()
    assert (run / "version_0/checkpoints/last.ckpt").exists() and not (run / "done").exists()

    second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]  # incl. config.yaml overwritten in the same folder
    assert f"resuming from {run / 'version_0/checkpoints/last.ckpt'} at global step 4" in second.stdout
    metrics = json.loads((run / "done").read_text())
    assert metrics["global_step"] == 12 and "test/acc/75" in metrics
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("version_")) == ["version_0"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "version_0")).Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 12  # the killed process's steps 4..6 shown once

    third = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "this run finished earlier; nothing to do" in third.stdout


def test_a_spec_whose_jobs_want_a_gpu_must_ask_slurm_for_one(tmp_path):
    """`accelerator: auto` (every benchmark config) on a node without a GPU trains on the CPU for
    hours without a word: the sweep refuses in one line, unless the spec says CPU on purpose."""
    pacs = SPEC.replace(DEMO_FINETUNE, GPU_HAP)
    no_gpu = pacs.replace("gpus_per_node: 4, nodes: 2, ", "ntasks_per_node: 1, ")
    with pytest.raises(DGHeadsError, match=r"method 'finetune' on pacs runs with trainer.accelerator auto .*"
                                           r"asks for no GPU: set slurm.gpus_per_node"):
        jobs_of(_spec(tmp_path, no_gpu), tmp_path / "runs")
    slurm_section = 'slurm: {{partition: gpu, gpus_per_node: 4, nodes: 2, time: "12:00:00", parallel: 8}}'
    assert slurm_section in pacs
    no_section = pacs.replace(slurm_section, "")
    with pytest.raises(DGHeadsError, match="asks for no GPU"):
        jobs_of(_spec(tmp_path, no_section), tmp_path / "runs")
    assert len(jobs_of(_spec(tmp_path, pacs), tmp_path / "runs")) == 16  # gpus_per_node: 4
    cpu = no_gpu.replace("ntasks_per_node: 1, ", "ntasks_per_node: 1, cpu_only: true, ")
    spec = _spec(tmp_path, cpu)
    jobs_file, jobs = write_sweep(spec, tmp_path / "runs")
    assert len(jobs) == 16 and "cpu-only" not in sbatch_command(spec, jobs_file, [0])
    # an explicit CPU accelerator in the arguments is CPU on purpose too
    args_cpu = no_gpu.replace('args: [--trainer.max_epochs, "1"]',
                              'args: [--trainer.max_epochs, "1", --trainer.accelerator, cpu]')
    assert len(jobs_of(_spec(tmp_path, args_cpu), tmp_path / "runs")) == 16
    # the demo configs say `accelerator: cpu`: no GPU needed, unless a grid asks for one
    demo_no_gpu = SPEC.replace("gpus_per_node: 4, nodes: 2, ", "")
    assert len(jobs_of(_spec(tmp_path, demo_no_gpu), tmp_path / "runs")) == 16
    with pytest.raises(DGHeadsError, match="trainer.accelerator gpu .* asks for no GPU"):
        jobs_of(_spec(tmp_path, demo_no_gpu.replace("grid:\n", "grid:\n  trainer.accelerator: [cpu, gpu]\n")),
                tmp_path / "runs")
    cpu_only = pacs.replace("gpus_per_node: 4, ", "gpus_per_node: 4, cpu_only: true, ")
    with pytest.raises(DGHeadsError, match="cpu_only is true but the slurm section also asks for GPUs"):
        jobs_of(_spec(tmp_path, cpu_only), tmp_path / "runs")


@pytest.mark.parametrize("request_, per_node", [("gres: 'gpu:a100:2'", 2), ("gres: gpu", 1), ("gpus: 4", 2),
                                                ("gpus_per_node: 'a100:3'", 3)])
def test_every_way_of_asking_slurm_for_gpus_sets_the_processes_per_node(tmp_path, request_, per_node):
    """One process per GPU on each of the 2 nodes, whichever way the spec asks for the GPUs."""
    text = SPEC.replace(DEMO_FINETUNE, GPU_HAP).replace(
        "gpus_per_node: 4, nodes: 2", request_ + ", nodes: 2")
    spec = _spec(tmp_path, text)
    jobs_file, jobs = write_sweep(spec, tmp_path / "runs")
    argv = jobs[0].argv()
    assert argv[argv.index("--trainer.devices") + 1] == str(per_node)
    assert f"--ntasks-per-node={per_node}" in sbatch_command(spec, jobs_file, [0])


def test_srun_gets_the_tasks_cpus(tmp_path):
    """srun inside sbatch does not inherit --cpus-per-task (SLURM >= 22.05): the array script
    passes it on, or a rank and its loader workers share one core."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/bash\necho "SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-unset} $*" > "$SRUN_LOG"\n')
    (fake / "srun").chmod(0o755)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("echo one\n")
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0",
           "SLURM_CPUS_PER_TASK": "8", "SRUN_LOG": str(tmp_path / "srun.log")}
    env.pop("SRUN_CPUS_PER_TASK", None)
    result = subprocess.run(["bash", str(REPO / "dg_heads/slurm/array.sbatch"), str(jobs)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "srun.log").read_text().startswith("SRUN_CPUS_PER_TASK=8 ")


# ------------------------------------------------------------------ launchers
LAUNCH_SPEC = """
runs_dir: {runs}
configs:
  - {repo}/configs/data/rotated_digits.yaml
  - "{repo}/configs/method/{{method}}.yaml"
  - {repo}/configs/trainer/demo.yaml
methods:
  finetune:
  lora:
datasets:
  rotated_digits: ["0", "75"]
slurm: {{cpu_only: true, time: "00:10:00"}}
"""

# a stand-in for `lightning fit`: records when it ran, fails for one job, else writes the done marker
FAKE_JOB = """
import sys, time, pathlib
args = sys.argv[1:]
done = pathlib.Path(args[args.index("--done_marker") + 1])
log = done.parents[4] / "starts.txt"  # tmp_path: runs/<dataset>/<method>/<job>/done
with log.open("a") as f:
    f.write(f"{time.time()} {done.parent.name}\\n")
time.sleep(1.0)
if "lora" in str(done) and "/75_" in str(done):
    sys.exit(3)
done.write_text("{}")
"""


def _launch_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(LAUNCH_SPEC.format(runs=tmp_path / "runs", repo=REPO))
    return spec


def test_local_launcher_runs_the_unfinished_jobs_n_at_a_time(tmp_path, monkeypatch):
    from dg_heads import sweep
    from tests.conftest import run_main

    fake = tmp_path / "fake_job.py"
    fake.write_text(FAKE_JOB)
    monkeypatch.setattr(sweep, "job_command", lambda job: [sys.executable, str(fake), *job.argv()[1:]])
    spec = _launch_spec(tmp_path)
    result = run_main("sweep", str(spec), "--launcher", "local", "--jobs", "2", "--no-check", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # one job failed
    assert "1 of 4 job(s) failed" in result.stdout and result.stdout.count("] done ") == 3
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "lora rotated_digits 75" in failed[0] and "local.log" in failed[0]
    starts = sorted(float(line.split()[0]) for line in (tmp_path / "starts.txt").read_text().splitlines())
    assert len(starts) == 4 and starts[1] - starts[0] < 0.9  # two at once (each job takes 1 s)
    assert starts[2] - starts[0] >= 0.9  # never more than two at once
    # the same command again runs only the failed job: same folders, done markers respected
    (tmp_path / "starts.txt").unlink()
    result = run_main("sweep", str(spec), "--launcher", "local", "--jobs", "2", "--no-check", cwd=tmp_path)
    assert "4 jobs in" in result.stdout and "3 done, 1 to run" in result.stdout
    assert len((tmp_path / "starts.txt").read_text().splitlines()) == 1


def test_sweep_command_line_help_and_a_bad_value(tmp_path):
    """`dg-heads sweep`'s options, from `sweep()`'s signature: the help lists each with its text and
    the argparse spellings still taken; a value it cannot take is one line naming the option."""
    from tests.conftest import run_main

    spec = _launch_spec(tmp_path)
    bad = run_main("sweep", str(spec), "--launcher", "slrum", "--no-check", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error: --launcher: ") and "'print', 'local', 'slurm'" in bad.stderr
    assert "slrum" in bad.stderr and not (tmp_path / "runs").exists()
    typo = run_main("sweep", str(spec), "--no-chek", cwd=tmp_path)
    assert typo.stderr == "error: unrecognized arguments: --no_chek; did you mean --check?\n", typo.stderr
    help_ = run_main("sweep", "--help", cwd=tmp_path)
    text = " ".join(help_.stdout.split())
    assert help_.returncode == 0 and "the sweep spec (YAML)" in text and "--jobs JOBS local: how many jobs" in text
    accepted = "Also accepted: dashes in option names (--runs-dir, --step-times); --no-preflight for --preflight " \
               "false; --no-check for --check false."
    assert accepted.replace(" ", "") in "".join(help_.stdout.split()), help_.stdout  # (wrapped at hyphens too)


def test_slurm_launcher_submits_the_array_and_says_when_there_is_no_sbatch(tmp_path, monkeypatch):
    from tests.conftest import run_main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spec = _launch_spec(tmp_path)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = run_main("sweep", str(spec), "--launcher", "slurm", "--no-check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: sweep --launcher slurm: `sbatch` is not on PATH")
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/sbatch_args\necho "Submitted batch job 4242"\n')
    sbatch.chmod(0o755)
    result = run_main("sweep", str(spec), "--launcher", "slurm", "--no-check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("Submitted batch job 4242")
    submitted = (tmp_path / "sbatch_args").read_text().split()
    assert "--array=0-3" in submitted and submitted[-1] == str(tmp_path / "runs" / "jobs.txt")


@pytest.mark.slow
def test_local_sweep_then_collect_gives_the_table(data_root, tmp_path):
    from tests.conftest import run_cli

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"runs_dir: {tmp_path / 'runs'}\nmethods:\n  finetune: {DEMO_FINETUNE.format(repo=REPO)}\n"
                    f"datasets:\n  RotatedDigits: ['75']\nargs: {json.dumps(QUICK)}\n")
    result = run_cli("sweep", str(spec), "--launcher", "local", "--jobs", "1", "--no-check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[1/1] done   finetune rotated_digits 75 seed 0 hp 0" in result.stdout
    result = run_cli("collect", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0 and "| finetune |" in result.stdout, result.stderr[-2000:]


def test_a_jobs_line_runs_from_any_folder_without_the_venv_on_path(tmp_path):
    """jobs.txt names this interpreter's `-m dg_heads` (not a bare `lightning`, which may be another
    venv's or Lightning 2.4's own command) and absolute config paths (not relative to the sweep's folder)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"runs_dir: {tmp_path / 'runs'}\nconfigs: [configs/data/rotated_digits.yaml, "
                    "configs/method/finetune.yaml, configs/trainer/demo.yaml]\nmethods: {finetune: }\n"
                    "datasets: {rotated_digits: ['75']}\nslurm: {cpu_only: true}\n")
    result = run_cli("sweep", str(spec), "--no-check", "--no-preflight", cwd=REPO)  # relative configs, as a user writes
    assert result.returncode == 0, result.stderr[-2000:]
    line = (tmp_path / "runs/jobs.txt").read_text().splitlines()[0]
    argv = shlex.split(line)
    assert argv[:4] == [sys.executable, "-m", "dg_heads", "fit"], argv[:4]
    configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
    assert configs == [str(REPO / f) for f in ("configs/data/rotated_digits.yaml", "configs/method/finetune.yaml",
                                               "configs/trainer/demo.yaml")]
    bare = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no venv on PATH, another folder
    parsed = subprocess.run([*argv, "--print_config"], cwd="/", env=bare, capture_output=True, text=True, timeout=300)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    assert "dg-tiny-vit" in parsed.stdout


def test_sweep_preflight_lists_missing_datasets_and_weights_before_anything_is_queued(tmp_path):
    """Every dataset folder and pretrained weight the jobs need, checked at `dg-heads sweep`: one
    line per problem with the command that fixes it, exit 2, nothing written."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"runs_dir: {tmp_path / 'runs'}\nconfigs: [{REPO}/configs/trainer/gpu.yaml, "
                    f"'{REPO}/configs/data/{{dataset}}.yaml', '{REPO}/configs/method/{{method}}.yaml']\n"
                    "methods: {hap: , lora: }\ndatasets: {pacs: [sketch], vlcs: [SUN09]}\n"
                    "slurm: {gpus_per_node: 1}\n")
    data = tmp_path / "data"
    make_benchmark(data, "vlcs", size=4)  # a complete layout (one image per class)
    env = {"DG_HEADS_DATA": str(data), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf/hub"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}  # an empty weights cache
    result = run_cli("sweep", str(spec), "--no-check", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, result.stderr  # PACS missing (VLCS is complete), ViT-B-16 openai not cached: once each
    assert errors[0].startswith(f"error: pacs: dataset folder {data / 'PACS'} does not exist")
    assert errors[0].endswith(f"run `dg-heads prepare pacs --root {data}` (downloads it where it can, else prints "
                              "the steps, then verifies the copy)")
    assert "ViT-B-16 openai are not in the cache" in errors[1] and "`dg-heads weights ViT-B-16 openai`" in errors[1]
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()
    (data / "VLCS/SUN09/bird").rename(data / "VLCS/SUN09/brid")  # a layout the DataModule cannot split
    result = run_cli("sweep", str(spec), "--no-check", cwd=tmp_path, env=env)
    assert "error: vlcs: class folders of" in result.stderr and "dg-heads prepare vlcs" in result.stderr
    skipped = run_cli("sweep", str(spec), "--no-check", "--no-preflight", cwd=tmp_path, env=env)
    assert skipped.returncode == 0, skipped.stderr and (tmp_path / "runs/jobs.txt").exists()


def test_collect_tells_failed_jobs_from_pending_ones(tmp_path):
    from tests.conftest import run_main

    _, jobs = write_sweep(_spec(tmp_path), tmp_path / "runs")
    runs = tmp_path / "runs"
    nothing = run_main("collect", str(runs), cwd=tmp_path)  # nothing finished yet
    assert nothing.returncode == 0, nothing.stderr
    assert "tables written" not in nothing.stdout and not (runs / "results").exists()
    assert "no table written" in nothing.stdout
    assert "16 job(s): 0 done, 0 failed, 16 pending" in nothing.stdout
    for job in jobs[:-3]:
        _finish(job, 0.9, 0.5)
    crashed, bug, waiting = jobs[-3:]
    (crashed.run_dir / "local.log").write_text("Seed set to 0\nerror: data (DomainBedDataModule): lost\n"
                                               "error: the training loss is not finite (nan) at global step 7\n")
    (runs / f"slurm-4242_{len(jobs) - 2}.out").write_text(  # an array task's output, by its line of jobs.txt
        "[...] array task 14\nTraceback (most recent call last):\n  File ...\nRuntimeError: CUDA out of memory\n")
    (waiting.run_dir / "local.log").write_text("Seed set to 0\nEpoch 0: 10%\n")  # still running
    result = run_main("collect", str(runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "16 job(s): 13 done, 2 failed, 1 pending" in out
    assert (f"  failed   {crashed.run_dir}: error: the training loss is not finite (nan) at global step 7 "
            f"(log: {crashed.run_dir / 'local.log'})") in out
    assert f"  failed   {bug.run_dir}: RuntimeError: CUDA out of memory" in out
    assert f"  pending  {waiting.run_dir}: no done marker (not finished)" in out
    assert "tables written to" in out and "pacs.{md,tex,csv,png}" in out


def test_preflight_walks_each_dataset_folder_once_per_sweep(tmp_path, monkeypatch):
    """DomainNet's 586,575 files on a network file system, walked once per sweep, not once per
    (method, hyper-parameters) job group."""
    import types

    from dg_heads import preflight

    calls = []
    monkeypatch.setattr(preflight, "dataset_problem", lambda dataset, root: calls.append((dataset, root)))
    jobs = [types.SimpleNamespace(configs=[], method=m, dataset="pacs", hparams={"model.init_args.optim.lr": lr},
                                  extra_args=["--data.init_args.root", str(tmp_path),
                                              "--model.init_args.clip.pretrained", "null"])
            for m in ("hap", "lora", "finetune") for lr in (1e-4, 1e-5)]
    assert preflight.preflight(jobs) == []
    assert calls == [("pacs", tmp_path)]
