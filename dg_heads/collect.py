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

A test-only run (`lightning test`: no `val/acc`, nothing to select) reports its test accuracy in
both, in the oracle's only when it scored the test domains' `in` split (`test_split: in`).

Retrieval runs (`splits.json`'s `task: retrieval`) get one table per test dataset
(`retrieval_<dataset>.*`): recall@1/5/10 both ways and RSUM per method and model, mean ± SE over
trial seeds; each run already tested the checkpoint it selected by `val/rsum`.

Cells are the mean plus/minus standard error over trial seeds (DomainBed's `np.std(x) /
sqrt(n)`); `Avg` is the mean of a row's cells, as in DomainBed. A sweep job without a `done` file
and a `metrics_test.json` is incomplete: it is listed, never averaged in, and a selection group
with one is left out (and named) rather than chosen from a partial set. An ordinary run without a
`metrics_test.json` is listed and left out of its group (nobody queued it to finish).

`--compare NAME` puts the figures of a paper (`dg_heads/papers/NAME.yaml`) beside ours (`dg_heads.papers`).
"""

from __future__ import annotations

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
from dg_heads.tasks.metrics import ACCURACY, COUNT, RETRIEVAL_METRICS, RSUM, SELECTION, key

VAL_ACC = SELECTION["classification"][0]  # `val/acc`: what training-domain validation selects by
TEST_ACC = key("test", ACCURACY)
VAL_RSUM = SELECTION["retrieval"][0]  # `val/rsum`: what a retrieval run selected its checkpoint by
TEST_RSUM = key("test", RSUM)

TRAINING = "training-domain validation set"  # DomainBed's names of its selection methods
ORACLE = "test-domain validation set (oracle)"
SELECTIONS = (TRAINING, ORACLE)
SELECTION_SUFFIX = {TRAINING: "", ORACLE: "_oracle"}  # in file names
DISPLAY = {"pacs": "PACS", "vlcs": "VLCS", "office_home": "OfficeHome", "terra_incognita": "TerraIncognita",
           "domain_net": "DomainNet", "rotated_digits": "RotatedDigits", "flickr30k": "Flickr30k",
           "mscoco": "MS-COCO"}


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
    task: str = "classification"  # or "retrieval" (splits.json's `task`, or the metrics a run wrote)
    tested: dict = field(default_factory=dict)  # a retrieval run's test datasets: name -> (split, images)
    model: tuple = ()  # a retrieval run's CLIP: (model_name, pretrained) from its config.yaml

    @property
    def test_only(self) -> bool:
        """A `lightning test` run (the zero-shot jobs): metrics without `val/acc`."""
        return self.metrics is not None and VAL_ACC not in self.metrics

    @property
    def group(self) -> tuple:
        j = self.job
        return j["method"], j["dataset"], j["test_domain"], j["trial_seed"]


def _read_json(path: Path) -> tuple[dict | None, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as error:
        return None, f"unreadable {path.name}: {error}"


def _splits(version: Path) -> dict:
    splits = _read_json(version / "splits.json")[0] if (version / "splits.json").is_file() else None
    return splits if isinstance(splits, dict) else {}


def _run_files(version: Path) -> tuple[dict | None, str, dict | None, str | None]:
    """A run folder's metrics_test.json (None and why when missing), metrics_oracle.json and test split."""
    oracle = _read_json(version / "metrics_oracle.json")[0] if (version / "metrics_oracle.json").is_file() else None
    test_split = _splits(version).get("test_split")
    path = version / "metrics_test.json"
    if not path.is_file():
        return None, "no metrics_test.json", oracle, test_split
    metrics, why = _read_json(path)
    if metrics is None:
        return None, why, oracle, test_split
    if TEST_ACC not in metrics and TEST_RSUM not in metrics:
        return None, f"{path.name} lacks {TEST_ACC} (classification) and {TEST_RSUM} (retrieval)", oracle, test_split
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


def _config(version: Path) -> dict:
    try:
        import yaml

        config = yaml.safe_load((version / "config.yaml").read_text())
    except Exception:  # noqa: BLE001 - no config or an unreadable one: nothing known from it
        return {}
    return config if isinstance(config, dict) else {}


def _retrieval_facts(run: Run, version: Path | None) -> None:
    """Mark a retrieval run (splits.json's `task`, or `test/rsum` in its metrics) with its test
    datasets (splits.json's `test`, else the metrics' `test/n/<dataset>`), its CLIP (config.yaml's
    `model.init_args.clip.model_name` / `pretrained`) and, for an ordinary run, its method and seed
    (config.yaml's `seed_everything`)."""
    splits = _splits(version) if version is not None else {}
    if splits.get("task") != "retrieval" and not (run.metrics and TEST_RSUM in run.metrics):
        return
    run.task = "retrieval"
    tested = splits.get("test") if isinstance(splits.get("test"), dict) else {}
    run.tested = {str(name): (info.get("split"), info.get("images")) for name, info in tested.items()
                  if isinstance(info, dict)}
    if not run.tested and run.metrics:
        count = key("test", COUNT) + "/"
        run.tested = {k[len(count):]: (None, int(v)) for k, v in run.metrics.items() if k.startswith(count)}
    config = _config(version) if version is not None else {}
    clip = ((config.get("model") or {}).get("init_args") or {}).get("clip") or {}
    run.model = (clip.get("model_name"), clip.get("pretrained")) if isinstance(clip, dict) else (None, None)
    if run.ordinary:
        run.job = {"method": _method_of(version), "trial_seed": config.get("seed_everything")}
        if run.metrics is None:
            run.why += " (still running, stopped, or run without --test_after_fit true)"


def _ordinary_run(version: Path) -> Run:
    """A `lightning fit` run folder: its group from splits.json (dataset, trial seed, test domains)."""
    metrics, why, oracle, test_split = _run_files(version)
    retrieval = Run(version, {}, metrics, why, ordinary=True)
    _retrieval_facts(retrieval, version)
    if retrieval.task == "retrieval":
        return retrieval
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
        versions = sorted(job_file.parent.glob("version_*"))
        _retrieval_facts(run, versions[-1] if versions else None)
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
    if run.test_only:
        # a `test`-only run (zero-shot: no hyper-parameters, no checkpoints): nothing to select, so
        # every selection reports its test accuracy; the oracle's only when that is the test
        # domains' `in` split, as the oracle's figure is (`select` leaves the others out of it)
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
    record) are returned separately. An unfinished ordinary run is left out of its group, and so is,
    from the oracle, a test-only run that scored more than the test domains' `in` split (`oracle_misfits`)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    misfits = {id(r) for r in oracle_misfits(runs)} if selection == ORACLE else set()
    for run in runs:
        if run.job and not (run.ordinary and run.metrics is None) and id(run) not in misfits:
            groups[run.group].append(run)
    chosen, partial = {}, []
    for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        accs = [run_acc(m, selection) for m in members]
        if any(a is None for a in accs):
            partial.append(group)
            continue
        chosen[group] = max(accs, key=lambda a: a[0])[1]
    return chosen, partial


def oracle_misfits(runs: list[Run]) -> list[Run]:
    """Test-only runs whose test split is not the test domains' `in` split (the zero-shot sweep's
    `test_split: all`): the oracle's figure is `in` accuracy, so they are in the training-domain table only."""
    return [r for r in runs if r.test_only and r.test_split != "in"]


def mean_se(values: list[float], scale: float = 100) -> tuple[float, float]:
    """DomainBed's mean and standard error, in percent (`scale` 1: values already in percent)."""
    data = scale * np.asarray(values, dtype=float)
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
                           ("±", "$\\pm$"), ("->", "$\\to$"), ("−", "$-$"), ("≤", "$\\le$"), ("—", "---")):
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


# ---------------------------------------------------------------- retrieval
def metric_label(name: str) -> str:
    """`i2t_r5` -> `I->T R@5`, `rsum` -> `RSUM`."""
    if name == RSUM:
        return "RSUM"
    direction, k = name.split("_r")
    return f"{'I->T' if direction == 'i2t' else 'T->I'} R@{k}"


def model_label(model: tuple) -> str:
    name, pretrained = (tuple(model) + (None, None))[:2]
    return f"{name or '?'}" + (f" ({pretrained})" if pretrained else "")


def retrieval_select(runs: list[Run]) -> tuple[dict[tuple, dict[str, float]], list[str]]:
    """(method, model, test dataset, trial seed) -> the recall of that dataset's test (percent).
    A run's metrics are `test/<dataset>/<name>`, or `test/<name>` when it tested one dataset. The
    checkpoint was already selected in the run (by `val/rsum`); several runs of one method, model
    and trial seed (another learning rate, a rerun): the one with the best `val/rsum`, the last
    one found among equals (a test-only run has none). Also returns what was left out, and why."""
    best: dict[tuple, tuple[float, dict]] = {}
    left_out = []
    for run in runs:
        if run.task != "retrieval" or run.metrics is None or not run.job:
            continue
        for dataset in run.tested:
            values = {m: run.metrics.get(key("test", m, dataset)) for m in RETRIEVAL_METRICS}
            if any(v is None for v in values.values()) and len(run.tested) == 1:
                values = {m: run.metrics.get(key("test", m)) for m in RETRIEVAL_METRICS}
            if any(v is None for v in values.values()):
                missing = [key("test", m, dataset) for m, v in values.items() if v is None]
                left_out.append(f"{run.folder}: metrics_test.json lacks {', '.join(missing)}")
                continue
            group = (run.job["method"], tuple(run.model), dataset, run.job.get("trial_seed"))
            score = run.metrics.get(VAL_RSUM, -math.inf)
            if group not in best or score >= best[group][0]:
                best[group] = (score, {m: float(v) for m, v in values.items()})
    # each group's `val/rsum` too: -inf for a test-only run (nothing trained, nothing drawn at random)
    return {group: {**values, VAL_RSUM: score} for group, (score, values) in best.items()}, left_out


@dataclass
class RetrievalTable:
    dataset: str
    rows: dict[tuple, dict[str, tuple[float, float, int]]]  # (method, model) -> metric -> (mean, se, n seeds)
    splits: set = field(default_factory=set)  # (split, images) of the runs' test
    test_only: set = field(default_factory=set)  # rows of test-only runs (zero-shot): the same figure for any seed

    def caption(self) -> str:
        tested = ", ".join(f"{split or 'test'} split, {images} images" if images else f"{split or 'test'} split"
                           for split, images in sorted(self.splits, key=str)) or "test split"
        return (f"{display(self.dataset)} ({tested}): retrieval recall (%), I->T image to text, T->I text to "
                f"image, RSUM their sum; model selection: each run's own, the checkpoint with the best val/rsum "
                f"(a test-only run: its weights), among runs of one method, model and trial seed the best "
                f"val/rsum; mean ± SE over trial seeds (n)")

    def _cells(self, row: tuple, latex: bool) -> list[str]:
        pm = " $\\pm$ " if latex else " ± "
        cells = self.rows[row]
        n = max(c[2] for c in cells.values())
        return [*(f"{cells[m][0]:.2f}{pm}{cells[m][1]:.2f}" for m in RETRIEVAL_METRICS), str(n)]

    def head(self) -> list[str]:
        return ["Method", "Model", *(metric_label(m) for m in RETRIEVAL_METRICS), "n"]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.head()) + " |", "|" + "---|" * len(self.head())]
        for row in self.rows:
            lines.append("| " + " | ".join([row[0], model_label(row[1]), *self._cells(row, False)]) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        lines = ["\\begin{table}", "\\centering", f"\\caption{{{_tex(self.caption())}}}",
                 "\\begin{tabular}{ll" + "c" * (len(RETRIEVAL_METRICS) + 1) + "}", "\\toprule",
                 " & ".join(f"\\textbf{{{_tex(h)}}}" for h in self.head()) + " \\\\", "\\midrule"]
        for row in self.rows:
            lines.append(" & ".join([_tex(row[0]), _tex(model_label(row[1])), *self._cells(row, True)]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines)

    def csv(self) -> str:
        rows = [[row[0], row[1][0] or "", row[1][1] or "", m, f"{mean:.4f}", f"{se:.4f}", n]
                for row, cells in self.rows.items() for m, (mean, se, n) in cells.items()]
        return _csv(["method", "model_name", "pretrained", "metric", "mean", "std_error", "trial_seeds"], rows)


def retrieval_tables(chosen: dict[tuple, dict[str, float]], runs: list[Run]) -> list[RetrievalTable]:
    """One table per test dataset: a row per (method, model), each metric's mean ± SE over trial seeds."""
    by_row: dict[tuple, list[dict]] = defaultdict(list)
    for (method, model, dataset, _seed), values in sorted(chosen.items(), key=lambda kv: str(kv[0])):
        by_row[(dataset, method, model)].append(values)
    splits: dict[str, set] = defaultdict(set)
    for run in runs:
        if run.task == "retrieval" and run.metrics is not None:
            for dataset, split in run.tested.items():
                splits[dataset].add(tuple(split))
    out = []
    for dataset in sorted({k[0] for k in by_row}):
        rows = {(m, model): {name: (*mean_se([v[name] for v in seeds], scale=1), len(seeds))
                             for name in RETRIEVAL_METRICS}
                for (ds, m, model), seeds in by_row.items() if ds == dataset}
        test_only = {(m, model) for (ds, m, model), seeds in by_row.items()
                     if ds == dataset and all(v[VAL_RSUM] == -math.inf for v in seeds)}
        out.append(RetrievalTable(dataset, rows, splits[dataset], test_only))
    return out


def registry_domains(dataset: str) -> list[str] | None:
    """A registry dataset's domains in DomainBed's order; None for one of one's own."""
    from dg_heads.data.registry import DATASETS

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
    retrieval_chosen: dict[tuple, dict[str, float]] = field(default_factory=dict)  # `retrieval_select`
    retrieval: list[RetrievalTable] = field(default_factory=list)  # one table per test dataset
    retrieval_left_out: list[str] = field(default_factory=list)  # finished retrieval runs not tabulated, and why

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
    classification = [r for r in runs if r.task != "retrieval"]
    domains_of, seeds = _sweep_facts(runs_dir, classification)
    splits: dict[str, set[str]] = defaultdict(set)
    for run in classification:
        if run.job and run.test_split:
            splits[run.job["dataset"]].add(run.test_split)
    chosen, partial, result = {}, {}, {}
    for selection in SELECTIONS:
        chosen[selection], partial[selection] = select(classification, selection)
        result[selection] = tables(chosen[selection], domains_of, seeds, selection, splits)
    retrieval_chosen, left_out = retrieval_select(runs)
    return Collected(runs, chosen, partial, result, retrieval_chosen, retrieval_tables(retrieval_chosen, runs),
                     left_out)


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
    if by_dataset or found.retrieval or compare:
        out_dir.mkdir(parents=True, exist_ok=True)
    for table in found.retrieval:
        stem = f"retrieval_{table.dataset}"
        (out_dir / f"{stem}.md").write_text(f"## {table.caption()}\n\n{table.markdown()}\n")
        (out_dir / f"{stem}.tex").write_text(table.latex() + "\n")
        (out_dir / f"{stem}.csv").write_text(table.csv())
        written.append(out_dir / stem)
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


def collect_tables(runs_dir: Path, *, out: Path | None = None, compare: str | None = None) -> None:
    """DomainBed-style result tables (both model selections: training-domain and test-domain
    validation) from a sweep's job folders or from ordinary runs (what `lightning fit ...
    --test_after_fit true` left under RUNS_DIR): RUNS_DIR/results/<dataset>.{md,tex,csv,png}.

    Args:
        runs_dir: the sweep's runs_dir, or a folder of runs
        out: where to write the tables (default RUNS_DIR/results)
        compare: print the figures of a paper (dg_heads/papers/PAPER.yaml, e.g. hap) beside ours
    """
    if compare:
        from dg_heads.papers import load_paper

        load_paper(compare)  # an unknown name stops here, before anything is written
    found = gather(runs_dir)
    out = out or runs_dir / "results"
    write_results(found, out, compare)
    for table in sorted((t for s in SELECTIONS for t in found.tables[s]),  # each dataset's two tables together
                        key=lambda t: (t.dataset, SELECTIONS.index(t.selection))):
        print(f"\n## {table.caption()}\n")
        print(table.markdown())
    for table in found.retrieval:
        print(f"\n## {table.caption()}\n")
        print(table.markdown())
    no_oracle = [r for r in found.runs if r.metrics is not None and r.task == "classification"
                 and not r.test_only and not r.oracle]  # a fit run that tested no last weights
    if found.retrieval_left_out:
        print(f"\n{len(found.retrieval_left_out)} retrieval test(s) left out of the tables:")
        for why in found.retrieval_left_out:
            print(f"  {why}")
    misfits = oracle_misfits([r for r in found.runs if r.task == "classification"])
    if misfits:
        print(f"\n{len(misfits)} test-only run(s) have nothing to select and scored the whole held-out domain: "
              f"in the training-domain table only")
    if no_oracle:
        print(f"\n{len(no_oracle)} finished run(s) have no metrics_oracle.json (run before dg-heads tested the "
              f"last weights for test-domain validation): their groups are left out of the oracle tables")
    if compare:
        from dg_heads.papers import comparison_markdown

        print("\n" + comparison_markdown(found, compare))
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
    if found.tables[TRAINING] or found.tables[ORACLE] or found.retrieval:
        names = sorted({t.dataset for s in SELECTIONS for t in found.tables[s]})
        print(f"\ntables written to {out}: " + ", ".join([*(f"{n}.{{md,tex,csv,png}}" for n in names),
                                                         *(f"retrieval_{t.dataset}.{{md,tex,csv}}"
                                                           for t in found.retrieval)])
              + (f", compare_{compare}.{{md,tex,csv}}" if compare else ""))
    else:
        print("\nno table written: no selection group has all its runs done")


def main(argv: list[str]) -> None:
    """`dg-heads collect ARGS`."""
    from dg_heads.cli import run_tool

    run_tool(collect_tables, argv, "dg-heads collect")
