"""`dg-heads collect RUNS_DIR`: DomainBed-style result tables from a sweep's job folders or from
ordinary runs (what `lightning fit ... --test_after_fit true` left under RUNS_DIR).

Two model selections, DomainBed's (`domainbed/model_selection.py`), each table naming its own:

- training-domain validation set (DomainBed's `IIDAccuracySelectionMethod`): each run already
  tested the checkpoint with the best `val/acc` (mean accuracy on the source domains' `out`
  splits, `metrics_test.json`); among the runs of one (method, dataset, test domain, trial seed)
  that differ only in hyper-parameters, the one with the best `val/acc` is chosen and its test
  accuracy kept.
- test-domain validation set (oracle) (DomainBed's `OracleSelectionMethod`): each run's LAST
  weights were tested on the test domain's `in` and `out` splits (`metrics_oracle.json`); the
  run with the best `out` accuracy is chosen and its `in` accuracy kept.

Cells are the mean plus/minus standard error over trial seeds (DomainBed's `np.std(x) /
sqrt(n)`); `Avg` is the mean of a row's cells, as in DomainBed. A sweep job without a `done` file
and a `metrics_test.json` is incomplete: it is listed, never averaged in, and a selection group
with one is left out (and named) rather than chosen from a partial set. An ordinary run without a
`metrics_test.json` is listed and left out of its group (nobody queued it to finish).

`--compare NAME` puts the figures of a paper (`dg_heads/papers/NAME.yaml`) beside ours (`dg_heads.papers`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dg_heads.errors import DGHeadsError
from dg_heads.figure import write_figure
from dg_heads.tasks.metrics import ACCURACY, RSUM, SELECTION, key

VAL_ACC = SELECTION["classification"][0]  # `val/acc`: what training-domain validation selects by
TEST_ACC = key("test", ACCURACY)

TRAINING = "training-domain validation set"  # DomainBed's names of its selection methods
ORACLE = "test-domain validation set (oracle)"
SELECTIONS = (TRAINING, ORACLE)
SELECTION_SUFFIX = {TRAINING: "", ORACLE: "_oracle"}  # in file names
DISPLAY = {"pacs": "PACS", "vlcs": "VLCS", "office_home": "OfficeHome", "terra_incognita": "TerraIncognita",
           "domain_net": "DomainNet", "rotated_digits": "RotatedDigits"}


def display(dataset: str) -> str:
    return DISPLAY.get(dataset, dataset)


@dataclass
class Run:
    folder: Path
    job: dict
    metrics: dict | None  # None: incomplete
    why: str = ""
    failed: str = ""  # the last `error:` line (or traceback line) of a job that stopped with one
    log: Path | None = None  # the job's output: `local.log` (local launcher) or `slurm-*_<task>.out`
    oracle: dict | None = None  # metrics_oracle.json: the last weights on the test domains' in/out splits
    ordinary: bool = False  # a run folder of `lightning fit`, not a sweep job
    test_split: str | None = None  # splits.json's: `all` or `in`

    @property
    def group(self) -> tuple:
        j = self.job
        return j["method"], j["dataset"], j["test_domain"], j["trial_seed"]


def _read_json(path: Path) -> tuple[dict | None, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as error:
        return None, f"unreadable {path.name}: {error}"


def _run_files(version: Path) -> tuple[dict | None, str, dict | None, str | None]:
    """A run folder's metrics_test.json (None and why when missing), metrics_oracle.json and test split."""
    oracle = _read_json(version / "metrics_oracle.json")[0] if (version / "metrics_oracle.json").is_file() else None
    splits = _read_json(version / "splits.json")[0] if (version / "splits.json").is_file() else None
    test_split = splits.get("test_split") if isinstance(splits, dict) else None
    path = version / "metrics_test.json"
    if not path.is_file():
        return None, "no metrics_test.json", oracle, test_split
    metrics, why = _read_json(path)
    if metrics is None:
        return None, why, oracle, test_split
    if TEST_ACC not in metrics:
        if key("test", RSUM) in metrics:
            return None, f"{path.name} is a retrieval run's (collect tabulates classification)", oracle, test_split
        return None, f"{path.name} lacks {TEST_ACC}", oracle, test_split
    return metrics, "", oracle, test_split


def _metrics_of(folder: Path) -> tuple[dict | None, str, dict | None, str | None]:
    """A sweep job's: complete with a `done` marker and its newest `version_*` folder's metrics."""
    if not (folder / "done").exists():
        return None, "no done marker (not finished)", None, None
    versions = sorted(folder.glob("version_*/metrics_test.json"))
    if not versions:
        return None, "no metrics_test.json", None, None
    return _run_files(versions[-1].parent)


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


def _method_of(version: Path) -> str:
    """An ordinary run's method: its logger's name in config.yaml (the CLI's `runs/<dataset>/<method>`),
    else the name of the folder above `version_N`."""
    try:
        import yaml

        config = yaml.safe_load((version / "config.yaml").read_text()) or {}
        name = config["trainer"]["logger"]["init_args"]["name"]
        if isinstance(name, str) and name:
            return name
    except Exception:  # noqa: BLE001 - no config, another logger: the folder says it
        pass
    return version.parent.name if version.name.startswith("version_") else version.name


def _ordinary_run(version: Path) -> Run:
    """A `lightning fit` run folder: its group from splits.json (dataset, trial seed, test domains)."""
    metrics, why, oracle, test_split = _run_files(version)
    splits, bad = _read_json(version / "splits.json") if (version / "splits.json").is_file() else (None, "")
    if not isinstance(splits, dict) or not {"dataset", "trial_seed", "test_domains"} <= set(splits):
        return Run(version, {}, None, bad or "no splits.json (the run stopped before its data was set up)",
                   ordinary=True)
    job = {"method": _method_of(version), "dataset": splits["dataset"], "trial_seed": splits["trial_seed"],
           "test_domain": "+".join(map(str, splits["test_domains"]))}
    if metrics is None:
        why += " (still running, stopped, or run without --test_after_fit true)"
    return Run(version, job, metrics, why, oracle=oracle, ordinary=True, test_split=test_split)


def find_runs(runs_dir: Path) -> list[Run]:
    """Every sweep job folder (a `job.json`) under `runs_dir`, complete or not (an incomplete one
    whose log ends in an error is `failed`, with that line, else pending), and every ordinary run
    folder (a `config.yaml` or `metrics_test.json` of `lightning fit`) outside them."""
    runs = []
    tasks = _array_tasks(runs_dir)
    job_folders = []
    for job_file in sorted(runs_dir.rglob("job.json")):
        job_folders.append(job_file.parent)
        try:
            job = json.loads(job_file.read_text())
        except (OSError, ValueError) as error:
            runs.append(Run(job_file.parent, {}, None, f"unreadable job.json: {error}"))
            continue
        metrics, why, oracle, test_split = _metrics_of(job_file.parent)
        run = Run(job_file.parent, job, metrics, why, oracle=oracle, test_split=test_split)
        if metrics is None:
            run.log = _job_log(runs_dir, job_file.parent, tasks.get(job_file.parent.resolve()))
            run.failed = last_error(run.log) if run.log is not None else ""
        runs.append(run)
    found = {p.parent for name in ("config.yaml", "metrics_test.json") for p in runs_dir.rglob(name)}
    for version in sorted(found):
        if not any(version == job or job in version.parents for job in job_folders):
            runs.append(_ordinary_run(version))
    return runs


def run_acc(run: Run, selection: str = TRAINING) -> tuple[float, float] | None:
    """(selection accuracy, reported test accuracy) of a run, as DomainBed's `run_acc`; None when
    the run has no record for this selection."""
    if run.metrics is None:
        return None
    if VAL_ACC not in run.metrics:
        # a `test`-only run (zero-shot: no hyper-parameters, no checkpoints): nothing to select,
        # every selection method reports its test accuracy (the test domains' `in` split, as the oracle's)
        return -math.inf, run.metrics[TEST_ACC]
    if selection == TRAINING:
        return run.metrics[VAL_ACC], run.metrics[TEST_ACC]
    if not run.oracle:
        return None
    outs = {k[len("test/acc/"):-len("/out")]: v for k, v in run.oracle.items()
            if k.startswith("test/acc/") and k.endswith("/out")}
    ins = {k[len("test/acc/"):-len("/in")]: v for k, v in run.oracle.items()
           if k.startswith("test/acc/") and k.endswith("/in")}
    if not outs or set(outs) != set(ins):
        return None
    return float(np.mean(list(outs.values()))), float(np.mean([ins[d] for d in outs]))


def select(runs: list[Run], selection: str = TRAINING) -> tuple[dict[tuple, float], list[tuple]]:
    """Test accuracy per (method, dataset, domain, seed) chosen by `selection` (the best
    `run_acc`'s first figure); groups with an incomplete run (or one without this selection's
    record) are returned separately. An unfinished ordinary run is left out of its group."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.job and not (run.ordinary and run.metrics is None):
            groups[run.group].append(run)
    chosen, partial = {}, []
    for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        accs = [run_acc(m, selection) for m in members]
        if any(a is None for a in accs):
            partial.append(group)
            continue
        chosen[group] = max(accs, key=lambda a: a[0])[1]
    return chosen, partial


def mean_se(values: list[float]) -> tuple[float, float]:
    """DomainBed's mean and standard error, in percent."""
    data = 100 * np.asarray(values, dtype=float)
    return float(data.mean()), float(np.std(data) / math.sqrt(len(data)))


def _split_words(splits: set[str]) -> str:
    words = {"in": "their DomainBed `in` split", "all": "the whole held-out domains"}
    return " / ".join(words.get(s, s) for s in sorted(splits)) if splits else "the held-out domains"


@dataclass
class Table:
    dataset: str
    domains: list[str]
    rows: dict[str, dict[str, tuple[float, float, int]]]  # method -> domain -> (mean, se, n seeds)
    expected_seeds: int
    selection: str = TRAINING
    test_splits: set[str] = field(default_factory=set)

    def caption(self) -> str:
        """The table's caption: the dataset, what is measured, and the model selection method."""
        tested = ("the test domains' DomainBed `in` split" if self.selection == ORACLE
                  else _split_words(self.test_splits))
        return (f"{display(self.dataset)}: test accuracy (%) on {tested}, model selection: {self.selection}; "
                f"mean ± SE over trial seeds")

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
        lines = ["\\begin{table}", "\\centering", f"\\caption{{{_tex(self.caption())}}}",
                 "\\begin{tabular}{l" + "c" * (len(self.domains) + 1) + "}", "\\toprule",
                 " & ".join(["\\textbf{Algorithm}", *(f"\\textbf{{{_tex(d)}}}" for d in self.domains),
                             "\\textbf{Avg}"]) + " \\\\", "\\midrule"]
        for method in self.rows:
            lines.append(" & ".join([_tex(method), *(self._cell(method, d, True) for d in self.domains),
                                     self._avg(method)]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines)

    def csv_rows(self) -> list[list]:
        rows = []
        for method, cells in self.rows.items():
            for domain in self.domains:
                if domain in cells:
                    mean, se, n = cells[domain]
                    rows.append([self.selection, method, domain, f"{mean:.4f}", f"{se:.4f}", n])
            avg = self.average(method)
            if avg is not None:
                rows.append([self.selection, method, "Avg", f"{avg:.4f}", "", ""])
        return rows

    def csv(self) -> str:
        return _csv(["selection", "method", "domain", "mean", "std_error", "trial_seeds"], self.csv_rows())


def _csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _tex(text: str) -> str:
    for plain, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                           ("±", "$\\pm$"), ("−", "$-$"), ("≤", "$\\le$"), ("—", "---")):
        text = text.replace(plain, escaped)
    return text


def tables(chosen: dict[tuple, float], domains_of: dict[str, list[str]], expected_seeds: dict[str, int],
           selection: str = TRAINING, test_splits: dict[str, set[str]] | None = None) -> list[Table]:
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
        out.append(Table(dataset, domains_of[dataset], rows, expected_seeds.get(dataset, 1), selection,
                         (test_splits or {}).get(dataset, set())))
    return out


def registry_domains(dataset: str) -> list[str] | None:
    """A registry dataset's domains in DomainBed's order; None for one of one's own."""
    from data_modules.registry import DATASETS

    info = DATASETS.get(dataset)
    return list(info.domains) if info is not None else None


def _sweep_facts(runs_dir: Path, runs: list[Run]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Test domains (in registry order, others after them) and trial seeds planned per dataset."""
    domains, seeds = defaultdict(set), defaultdict(set)
    jobs = [r.job for r in runs if r.job]
    sweep = runs_dir / "sweep.json"
    if sweep.exists():
        try:
            jobs = json.loads(sweep.read_text())["jobs"] + [r.job for r in runs if r.job and r.ordinary]
        except (OSError, ValueError, KeyError):
            pass
    for job in jobs:
        domains[job["dataset"]].add(str(job["test_domain"]))
        seeds[job["dataset"]].add(job["trial_seed"])
    ordered = {}
    for ds, found in domains.items():
        known = registry_domains(ds) or []
        ordered[ds] = [d for d in known if d in found] + sorted(found - set(known))
    return ordered, {ds: len(s) for ds, s in seeds.items()}


@dataclass
class Collected:
    runs: list[Run]
    chosen: dict[str, dict[tuple, float]]  # selection -> (method, dataset, domain, seed) -> test accuracy
    partial: dict[str, list[tuple]]  # selection -> groups left out
    tables: dict[str, list[Table]]  # selection -> one table per dataset

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.runs if r.metrics is None]


def gather(runs_dir: Path) -> Collected:
    """Every run under `runs_dir`, both selections and their tables (nothing written)."""
    if not runs_dir.is_dir():
        raise DGHeadsError(f"runs folder {runs_dir} does not exist")
    runs = find_runs(runs_dir)
    if not runs:
        raise DGHeadsError(f"no runs under {runs_dir}: neither sweep jobs (job.json, `dg-heads sweep` writes "
                           f"them) nor run folders of `lightning fit ... --test_after_fit true`")
    domains_of, seeds = _sweep_facts(runs_dir, runs)
    splits: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        if run.job and run.test_split:
            splits[run.job["dataset"]].add(run.test_split)
    chosen, partial, result = {}, {}, {}
    for selection in SELECTIONS:
        chosen[selection], partial[selection] = select(runs, selection)
        result[selection] = tables(chosen[selection], domains_of, seeds, selection, splits)
    return Collected(runs, chosen, partial, result)


def collect(runs_dir: Path, out_dir: Path | None = None,
            compare: str | None = None) -> tuple[list[Table], list[Run], list[tuple]]:
    """Write every dataset's tables (training-domain validation, then the oracle) as .md, .tex
    and .csv, and a figure per selection; with `compare`, the paper's tables beside ours
    (`compare_<name>.*`). Returns the training-domain validation tables, the incomplete runs and
    the groups left out of that selection."""
    found = gather(runs_dir)
    out_dir = out_dir or runs_dir / "results"
    write_results(found, out_dir, compare)
    return found.tables[TRAINING], found.incomplete, found.partial[TRAINING]


def write_results(found: Collected, out_dir: Path, compare: str | None = None) -> list[Path]:
    by_dataset: dict[str, list[Table]] = defaultdict(list)
    for selection in SELECTIONS:
        for table in found.tables[selection]:
            by_dataset[table.dataset].append(table)
    written = []
    if by_dataset or compare:
        out_dir.mkdir(parents=True, exist_ok=True)
    for dataset, both in by_dataset.items():
        md = "\n\n".join(f"## {t.caption()}\n\n{t.markdown()}" for t in both)
        (out_dir / f"{dataset}.md").write_text(md + "\n")
        (out_dir / f"{dataset}.tex").write_text("\n\n".join(t.latex() for t in both) + "\n")
        (out_dir / f"{dataset}.csv").write_text(
            _csv(["selection", "method", "domain", "mean", "std_error", "trial_seeds"],
                 [row for t in both for row in t.csv_rows()]))
        for table in both:  # per test domain: each method's mean ± SE
            write_figure(table, out_dir / f"{dataset}{SELECTION_SUFFIX[table.selection]}.png")
        written.append(out_dir / dataset)
    if compare:
        from dg_heads.papers import write_comparison

        written += write_comparison(found, compare, out_dir)
    return written


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="dg-heads collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where to write the tables (default RUNS_DIR/results)")
    parser.add_argument("--compare", default=None, metavar="PAPER",
                        help="print the figures of a paper (dg_heads/papers/PAPER.yaml, e.g. hap) beside ours")
    args = parser.parse_args(argv)
    if args.compare:
        from dg_heads.papers import load_paper

        load_paper(args.compare)  # an unknown name stops here, before anything is written
    found = gather(args.runs_dir)
    out = args.out or args.runs_dir / "results"
    write_results(found, out, args.compare)
    for table in sorted((t for s in SELECTIONS for t in found.tables[s]),  # each dataset's two tables together
                        key=lambda t: (t.dataset, SELECTIONS.index(t.selection))):
        print(f"\n## {table.caption()}\n")
        print(table.markdown())
    no_oracle = [r for r in found.runs if r.metrics is not None and not r.oracle]
    if no_oracle:
        print(f"\n{len(no_oracle)} finished run(s) have no metrics_oracle.json (run before dg-heads tested the "
              f"last weights for test-domain validation): their groups are left out of the oracle tables")
    if args.compare:
        from dg_heads.papers import comparison_markdown

        print("\n" + comparison_markdown(found, args.compare))
    incomplete = found.incomplete
    failed = [run for run in incomplete if run.failed]
    pending = [run for run in incomplete if not run.failed]
    if incomplete:
        total = len(found.runs)
        print(f"\n{total} job(s): {total - len(incomplete)} done, {len(failed)} failed, {len(pending)} pending "
              f"(not started, still running, or stopped without an error line); only done ones are in the tables")
    for run in failed:
        print(f"  failed   {run.folder}: {run.failed} (log: {run.log})")
    for run in pending:
        print(f"  pending  {run.folder}: {run.why}" + (f" (log: {run.log})" if run.log else ""))
    partial = found.partial[TRAINING]
    if partial:
        print(f"{len(partial)} selection group(s) left out until their runs finish: "
              + ", ".join("/".join(map(str, g)) for g in partial))
    if found.tables[TRAINING] or found.tables[ORACLE]:
        names = sorted({t.dataset for s in SELECTIONS for t in found.tables[s]})
        print(f"\ntables written to {out}: " + ", ".join(f"{n}.{{md,tex,csv,png}}" for n in names)
              + (f", compare_{args.compare}.{{md,tex,csv}}" if args.compare else ""))
    else:
        print("\nno table written: no selection group has all its runs done")
