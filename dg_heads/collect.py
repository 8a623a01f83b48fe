"""`dg-heads collect RUNS_DIR`: DomainBed-style result tables from a sweep's run folders.

Model selection is DomainBed's training-domain validation: each run already tested the
checkpoint with the best `val/acc` (mean accuracy on the source domains' `out` splits); among
the runs of one (method, dataset, test domain, trial seed) that differ only in
hyper-parameters, the one with the best `val/acc` is chosen and its test accuracy kept. Cells are
the mean plus/minus standard error over trial seeds (DomainBed's `np.std(x) / sqrt(n)`); `Avg` is
the mean of a row's cells, as in DomainBed. A run without a `done` file and a `metrics_test.json`
is incomplete: it is listed, never averaged in, and a selection group with one is left out
(and named) rather than chosen from a partial set.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dg_heads.errors import DGHeadsError
from dg_heads.figure import write_figure


@dataclass
class Run:
    folder: Path
    job: dict
    metrics: dict | None  # None: incomplete
    why: str = ""
    failed: str = ""  # the last `error:` line (or traceback line) of a job that stopped with one
    log: Path | None = None  # the job's output: `local.log` (local launcher) or `slurm-*_<task>.out`

    @property
    def group(self) -> tuple:
        j = self.job
        return j["method"], j["dataset"], j["test_domain"], j["trial_seed"]


def _metrics_of(folder: Path) -> tuple[dict | None, str]:
    if not (folder / "done").exists():
        return None, "no done marker (not finished)"
    files = sorted(folder.glob("version_*/metrics_test.json"))
    if not files:
        return None, "no metrics_test.json"
    try:
        metrics = json.loads(files[-1].read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable {files[-1].name}: {error}"
    if "val/acc" not in metrics or "test/acc" not in metrics:
        return None, f"{files[-1].name} lacks val/acc or test/acc"
    return metrics, ""


def _array_tasks(runs_dir: Path) -> dict[Path, int]:
    """Job folder -> its array task index (its line of jobs.txt - 1), from `sweep.json`."""
    try:
        listed = json.loads((runs_dir / "sweep.json").read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {(runs_dir / job["run_dir"]).resolve(): i for i, job in enumerate(listed) if "run_dir" in job}


def _job_log(runs_dir: Path, folder: Path, task: int | None) -> Path | None:
    """The newest output of a job: `local.log` in its folder, or SLURM's `slurm-<job>_<task>.out`."""
    logs = [folder / "local.log"] if (folder / "local.log").is_file() else []
    if task is not None:
        logs += [p for p in runs_dir.glob(f"slurm-*_{task}.out") if p.is_file()]
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def last_error(log: Path) -> str:
    """A job log's last `error: ...` line; the last line of a traceback when there is none; else ''."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return lines[-1]
    return ""


def find_runs(runs_dir: Path) -> list[Run]:
    """Every job folder (a `job.json`) under `runs_dir`, complete or not; an incomplete one whose
    log ends in an error is `failed` (with that line), else pending (not started, or running)."""
    runs = []
    tasks = _array_tasks(runs_dir)
    for job_file in sorted(runs_dir.rglob("job.json")):
        try:
            job = json.loads(job_file.read_text())
        except (OSError, ValueError) as error:
            runs.append(Run(job_file.parent, {}, None, f"unreadable job.json: {error}"))
            continue
        metrics, why = _metrics_of(job_file.parent)
        run = Run(job_file.parent, job, metrics, why)
        if metrics is None:
            run.log = _job_log(runs_dir, job_file.parent, tasks.get(job_file.parent.resolve()))
            run.failed = last_error(run.log) if run.log is not None else ""
        runs.append(run)
    return runs


def select(runs: list[Run]) -> tuple[dict[tuple, float], list[tuple]]:
    """Test accuracy per (method, dataset, domain, seed) chosen by best val/acc; groups with an
    incomplete run are returned separately."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.job:
            groups[run.group].append(run)
    chosen, partial = {}, []
    for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if any(m.metrics is None for m in members):
            partial.append(group)
            continue
        best = max(members, key=lambda m: m.metrics["val/acc"])
        chosen[group] = best.metrics["test/acc"]
    return chosen, partial


def mean_se(values: list[float]) -> tuple[float, float]:
    """DomainBed's mean and standard error, in percent."""
    data = 100 * np.asarray(values, dtype=float)
    return float(data.mean()), float(np.std(data) / math.sqrt(len(data)))


@dataclass
class Table:
    dataset: str
    domains: list[str]
    rows: dict[str, dict[str, tuple[float, float, int]]]  # method -> domain -> (mean, se, n seeds)
    expected_seeds: int

    def average(self, method: str) -> float | None:
        cells = self.rows[method]
        if any(d not in cells for d in self.domains):
            return None
        return float(np.mean([cells[d][0] for d in self.domains]))

    def _cell(self, method: str, domain: str, latex: bool) -> str:
        if domain not in self.rows[method]:
            return "-"
        mean, se, n = self.rows[method][domain]
        pm = " $\\pm$ " if latex else " ± "
        mark = "" if n >= self.expected_seeds else (f"$^{{{n}}}$" if latex else f" ({n}/{self.expected_seeds} seeds)")
        return f"{mean:.1f}{pm}{se:.1f}{mark}"

    def _avg(self, method: str) -> str:
        avg = self.average(method)
        return "-" if avg is None else f"{avg:.1f}"

    def markdown(self) -> str:
        head = ["Method", *self.domains, "Avg"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in self.rows:
            lines.append("| " + " | ".join([method, *(self._cell(method, d, False) for d in self.domains),
                                            self._avg(method)]) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        escape = lambda s: s.replace("_", "\\_")  # noqa: E731
        lines = ["\\begin{tabular}{l" + "c" * (len(self.domains) + 1) + "}", "\\toprule",
                 " & ".join(["\\textbf{Algorithm}", *(f"\\textbf{{{escape(d)}}}" for d in self.domains),
                             "\\textbf{Avg}"]) + " \\\\", "\\midrule"]
        for method in self.rows:
            lines.append(" & ".join([escape(method), *(self._cell(method, d, True) for d in self.domains),
                                     self._avg(method)]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["method", "domain", "mean", "std_error", "trial_seeds"])
        for method, cells in self.rows.items():
            for domain in self.domains:
                if domain in cells:
                    mean, se, n = cells[domain]
                    writer.writerow([method, domain, f"{mean:.4f}", f"{se:.4f}", n])
            avg = self.average(method)
            if avg is not None:
                writer.writerow([method, "Avg", f"{avg:.4f}", "", ""])
        return out.getvalue()


def tables(chosen: dict[tuple, float], domains_of: dict[str, list[str]], expected_seeds: dict[str, int]) -> list[Table]:
    """One table per dataset from the selected test accuracies (`select`)."""
    by_cell: dict[tuple, list[float]] = defaultdict(list)
    for (method, dataset, domain, _seed), acc in chosen.items():
        by_cell[(dataset, method, domain)].append(acc)
    out = []
    for dataset in sorted({k[0] for k in by_cell}):
        methods = sorted({k[1] for k in by_cell if k[0] == dataset})
        rows = {m: {} for m in methods}
        for (ds, method, domain), accs in by_cell.items():
            if ds == dataset:
                rows[method][domain] = (*mean_se(accs), len(accs))
        out.append(Table(dataset, domains_of[dataset], rows, expected_seeds.get(dataset, 1)))
    return out


def _sweep_facts(runs_dir: Path, runs: list[Run]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Test domains (in registry order) and trial seeds planned per dataset."""
    from data_modules.registry import get_dataset

    domains, seeds = defaultdict(set), defaultdict(set)
    jobs = [r.job for r in runs if r.job]
    sweep = runs_dir / "sweep.json"
    if sweep.exists():
        try:
            jobs = json.loads(sweep.read_text())["jobs"]
        except (OSError, ValueError, KeyError):
            pass
    for job in jobs:
        domains[job["dataset"]].add(job["test_domain"])
        seeds[job["dataset"]].add(job["trial_seed"])
    ordered = {ds: [d for d in get_dataset(ds).domains if d in found] for ds, found in domains.items()}
    return ordered, {ds: len(s) for ds, s in seeds.items()}


def collect(runs_dir: Path, out_dir: Path | None = None) -> tuple[list[Table], list[Run], list[tuple]]:
    if not runs_dir.is_dir():
        raise DGHeadsError(f"runs folder {runs_dir} does not exist")
    runs = find_runs(runs_dir)
    if not runs:
        raise DGHeadsError(f"no runs (job.json files) under {runs_dir}; `dg-heads sweep` writes them")
    domains_of, seeds = _sweep_facts(runs_dir, runs)
    chosen, partial = select(runs)
    result = tables(chosen, domains_of, seeds)
    out_dir = out_dir or runs_dir / "results"
    if result:
        out_dir.mkdir(parents=True, exist_ok=True)
    for table in result:
        (out_dir / f"{table.dataset}.md").write_text(table.markdown() + "\n")
        (out_dir / f"{table.dataset}.tex").write_text(table.latex() + "\n")
        (out_dir / f"{table.dataset}.csv").write_text(table.csv())
        write_figure(table, out_dir / f"{table.dataset}.png")  # per test domain: each method's mean ± SE
    incomplete = [r for r in runs if r.metrics is None]
    return result, incomplete, partial


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="dg-heads collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where to write the tables (default RUNS_DIR/results)")
    args = parser.parse_args(argv)
    result, incomplete, partial = collect(args.runs_dir, args.out)
    for table in result:
        print(f"\n## {table.dataset} (test accuracy, training-domain validation, mean ± SE over trial seeds)\n")
        print(table.markdown())
    failed = [run for run in incomplete if run.failed]
    pending = [run for run in incomplete if not run.failed]
    total = len(find_runs(args.runs_dir)) if incomplete else None
    done = (total - len(incomplete)) if total is not None else None
    if incomplete:
        print(f"\n{total} job(s): {done} done, {len(failed)} failed, {len(pending)} pending "
              f"(not started, still running, or stopped without an error line); only done ones are in the tables")
    for run in failed:
        print(f"  failed   {run.folder}: {run.failed} (log: {run.log})")
    for run in pending:
        print(f"  pending  {run.folder}: {run.why}" + (f" (log: {run.log})" if run.log else ""))
    if partial:
        print(f"{len(partial)} selection group(s) left out until their runs finish: "
              + ", ".join("/".join(map(str, g)) for g in partial))
    if result:
        out = args.out or args.runs_dir / "results"
        print(f"\ntables written to {out}: " + ", ".join(f"{t.dataset}.{{md,tex,csv,png}}" for t in result))
    else:
        print("\nno table written: no selection group has all its runs done")
