"""`dg_heads.cli.main`, the `lightning` / `dg-heads` / `python -m dg_heads` command, in-process
(`run_main`): `--help` lists every subcommand; a user's mistake, in any subcommand, is one `error:`
line and exit 2; a bug keeps its traceback; SLURM's stop (requeue, SIGTERM) exits 143. The
subcommands' own options and runs: `tests/cli/` and each tool's test file."""

import pytest

from tests.conftest import run_main

# written out here, in the order `--help` lists them (a new subcommand is added by hand)
SUBCOMMANDS = ["fit", "validate", "test", "predict", "sweep", "collect", "prepare", "splits", "export", "atlas",
               "weights"]


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_help_lists_every_subcommand_once(args, tmp_path):
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    words = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert words == SUBCOMMANDS, result.stdout


def test_an_unknown_subcommand_is_one_error_line_naming_it(tmp_path):
    result = run_main("fitt", "--config", "x.yaml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'fitt'" in lines[0], result.stderr
    assert "did you mean 'fit'?" in lines[0] and "sweep" in lines[0] and "atlas" in lines[0]  # the tools too


@pytest.mark.parametrize("args, line", [
    (["collect", "{tmp}/none"], "error: runs folder {tmp}/none does not exist"),
    (["sweep", "{tmp}/spec.yaml"], "error: cannot read sweep spec {tmp}/spec.yaml: [Errno 2] No such file or "
                                   "directory: '{tmp}/spec.yaml'"),
    (["splits", "--dataset", "pacz"], "error: unknown dataset 'pacz'; expected one of ["),
])
def test_a_tools_mistake_is_one_error_line(args, line, tmp_path):
    result = run_main(*[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line.format(tmp=tmp_path)), result.stderr


def test_a_bug_is_not_made_a_line(tmp_path, monkeypatch):
    from dg_heads import environment

    def bug():
        raise KeyError("a bug")

    monkeypatch.setattr(environment, "check", bug)
    with pytest.raises(KeyError, match="a bug"):
        run_main("collect", str(tmp_path), cwd=tmp_path)


@pytest.mark.parametrize("stop, code, said", [
    ("requeued rank 0", 143, ""),  # the run's exit code: SLURM requeues it
    ("requeued rank 1", 0, ""),  # other ranks exit quietly: Lightning's launcher would kill rank 0 at once
    ("SIGTERM", 143, "dg-heads: stopped by SIGTERM; run the same command again to resume (--ckpt_path last)\n"),
])
def test_a_slurm_stop_exits_143_on_rank_0(stop, code, said, tmp_path, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from dg_heads import lightning_cli
    from dg_heads.callbacks.requeue import Requeued

    def stopped(*args, **kwargs):  # the CLI's run, stopped by SLURM's signal
        raise Requeued(rank=int(stop[-1])) if stop.startswith("requeued") else SIGTERMException()

    monkeypatch.setattr(lightning_cli, "DGHeadsCLI", stopped)
    result = run_main("fit", "--config", "x.yaml", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (code, said)
