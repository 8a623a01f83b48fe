"""Published figures as data (`<name>.yaml` here) and `dg-heads collect RUNS --compare NAME`:
our mean ± SE beside each figure of the paper, the difference, and whether it lies within 2 SE
plus the figure's rounding (half its last printed digit: 0.05 for 96.1, 0.005 for 62.16).

Our figure for a dataset is DomainBed's averages-table cell: per trial seed the mean over all the
dataset's test domains (a seed that lacks one is left out; with none complete the cell is X),
then the mean ± SE (`np.std / sqrt(n)`, n trial seeds) over trial seeds. A table's `Avg` (HAP's
five-benchmark average) is, per trial seed, the mean of those per-seed dataset figures, then mean
± SE over the seeds complete in every dataset; X when any dataset is incomplete, as DomainBed
prints X for an incomplete average.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from dg_heads.collect import (
    SELECTION_SUFFIX,
    SELECTIONS,
    Collected,
    RetrievalTable,
    Table,
    _csv,
    _tex,
    display,
    mean_se,
    metric_label,
    model_label,
    registry_domains,
)
from dg_heads.errors import DGHeadsError
from dg_heads.figure import write_figure
from dg_heads.tasks.metrics import RECALLS

AVG = "Avg"
NONE = "—"


def known_papers() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


@dataclass
class PaperTable:
    key: str
    title: str
    source: str
    datasets: list[str]
    average: list[str]  # the datasets of `Avg`; empty: no Avg row
    rows: list[str]
    figures: dict[str, dict[str, tuple[float, bool, float]]]  # method -> dataset or Avg -> (figure, "about",
    notes: list[str]                                             # half its last printed digit)


def rounding(raw) -> float:
    """Half the last digit a figure is printed to: "96.1" (or YAML's 96.1) 0.05, "62.16" 0.005, 96 0.5.
    A published figure is rounded to that digit, so a difference that small is no difference."""
    text = raw if isinstance(raw, str) else (str(raw) if isinstance(raw, int) else repr(float(raw)))
    decimals = len(text.strip().split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** -decimals


@dataclass
class Reference:
    """One published retrieval row: a model on a dataset, recall@k (percent) as printed."""
    model: tuple[str, str]  # (model_name, pretrained) as open_clip names them
    dataset: str
    split: str
    figures: dict[str, tuple[float, bool, float]]  # metric -> (figure, "about", rounding)


@dataclass
class Paper:
    name: str
    title: str
    authors: str
    arxiv: str | None
    setting: str
    tables: list[PaperTable]
    task: str = "classification"
    references: list[Reference] = field(default_factory=list)  # a retrieval paper's reference rows
    reference_title: str = ""
    reference_source: str = ""
    reference_method: str = "zero_shot"  # our method whose runs are compared with the references
    not_in_sources: str = ""

    def cite(self) -> str:
        arxiv = f", arXiv {self.arxiv}" if self.arxiv else ""
        return f'{self.authors}, "{self.title}"{arxiv}'


def load_paper(name: str) -> Paper:
    """`dg_heads/papers/<name>.yaml`; an unknown name or a malformed file is one error line."""
    import yaml

    known = known_papers()
    if name not in known:
        raise DGHeadsError(f"--compare {name}: no such paper; known: {', '.join(known)}")
    where = f"dg_heads/papers/{name}.yaml"
    try:
        data = yaml.safe_load(resources.files(__name__).joinpath(f"{name}.yaml").read_text())
        if data.get("task") == "retrieval":
            refs = data["references"]
            rows = []
            for row in refs["rows"]:
                unknown = set(row["figures"]) - set(RECALLS)
                if unknown:
                    raise ValueError(f"references.rows: unknown metric(s) {sorted(unknown)}; expected {list(RECALLS)}")
                rows.append(Reference((str(row["model_name"]), str(row["pretrained"])), str(row["dataset"]),
                                      str(row.get("split") or ""),
                                      {m: (float(v), False, rounding(v)) for m, v in row["figures"].items()}))
            return Paper(name, data["paper"], data["authors"], data.get("arxiv"), data["setting"], [], "retrieval",
                         rows, refs["title"], refs["source"], refs.get("method", "zero_shot"),
                         refs.get("not_in_sources", ""))
        tables = []
        for key, t in data["tables"].items():
            figures = {}
            for method, cells in (t.get("figures") or {}).items():
                if method not in t["rows"]:
                    raise ValueError(f"tables.{key}.figures.{method}: not in tables.{key}.rows")
                figures[method] = {ds: (float(v["value"]), bool(v.get("about")), rounding(v["value"]))
                                   if isinstance(v, dict) else (float(v), False, rounding(v))
                                   for ds, v in cells.items()}
            tables.append(PaperTable(key, t["title"], t["source"], list(t["datasets"]), list(t.get("average") or []),
                                     list(t["rows"]), figures, list(t.get("notes") or [])))
        return Paper(name, data["paper"], data["authors"], data.get("arxiv"), data["setting"], tables)
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as error:
        raise DGHeadsError(f"{where}: {error!r} (expected paper, authors, setting and tables.<name>.{{title, "
                           f"source, datasets, rows, figures}}, or task: retrieval and references.{{title, source, "
                           f"rows}})") from error


# ---------------------------------------------------------------- our figures
def seed_figures(chosen: dict[tuple, float], method: str, dataset: str) -> tuple[dict, int, int]:
    """Per trial seed, the mean test accuracy over all the dataset's test domains (seeds that have
    them all); and the most domains any seed has, of how many."""
    cells: dict = {}
    for (m, ds, domain, seed), acc in chosen.items():
        if m == method and ds == dataset:
            cells.setdefault(seed, {})[domain] = acc
    found = {d for per in cells.values() for d in per}
    domains = registry_domains(dataset) or sorted(found)
    complete = {seed: float(np.mean([per[d] for d in domains])) for seed, per in cells.items()
                if all(d in per for d in domains)}
    most = max((len([d for d in domains if d in per]) for per in cells.values()), default=0)
    return complete, most, len(domains)


def within(difference: float, se: float, rounding: float) -> bool:
    """|ours − paper| <= 2 SE + half the paper's last printed digit (1e-9: float noise at the edge)."""
    return abs(difference) <= 2 * se + rounding + 1e-9


WITHIN = ("Within 2 SE: |ours − paper| ≤ 2 SE + half the last digit the paper prints (0.05 for a figure given "
          "to 0.1, its rounding), — with fewer than 2 trial seeds.")


@dataclass
class Line:
    method: str
    dataset: str  # a dataset name or Avg
    ours: tuple[float, float, int] | None
    ours_note: str  # what stands for ours when there is no figure: "—" or "X (2/4 domains)"
    paper: tuple[float, bool, float] | None  # (figure, "about", half its last printed digit)

    @property
    def difference(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours[0] - self.paper[0]

    @property
    def within(self) -> bool | None:
        """|ours − paper| <= 2 SE + the paper's rounding; None without both figures or with fewer
        than 2 trial seeds."""
        if self.difference is None or self.ours[2] < 2:
            return None
        return within(self.difference, self.ours[1], self.paper[2])

    def cells(self) -> list[str]:
        ours = NONE if self.ours is None and not self.ours_note else (
            self.ours_note if self.ours is None else f"{self.ours[0]:.1f} ± {self.ours[1]:.1f}")
        paper = NONE if self.paper is None else f"{'about ' if self.paper[1] else ''}{self.paper[0]:.1f}"
        diff = NONE if self.difference is None else f"{self.difference:+.1f}"
        within = NONE if self.within is None else ("yes" if self.within else "no")
        name = AVG if self.dataset == AVG else display(self.dataset)
        return [self.method, name, ours, "" if self.ours is None else str(self.ours[2]), paper, diff, within]


def _ours(chosen: dict[tuple, float], method: str, dataset: str) -> tuple[tuple | None, str, dict]:
    seeds, most, total = seed_figures(chosen, method, dataset)
    if seeds:
        return (*mean_se(list(seeds.values())), len(seeds)), "", seeds
    return None, (f"X ({most}/{total} domains)" if most else NONE), {}


def comparison_lines(paper: Paper, table: PaperTable, chosen: dict[tuple, float], first: bool) -> list[Line]:
    """The rows of one paper table beside ours. The paper's first table also lists what we ran
    that none of its tables names (methods, datasets), with "—" for the paper."""
    ours_methods = sorted({k[0] for k in chosen})
    ours_datasets = sorted({k[1] for k in chosen})
    named = {m for t in paper.tables for m in t.rows}
    methods = [m for m in table.rows if m in table.figures or any(k[0] == m and k[1] in table.datasets for k in chosen)]
    datasets = list(table.datasets)
    if first:
        methods += [m for m in ours_methods if m not in named]
        datasets += [d for d in ours_datasets if d not in datasets]
    lines = []
    for method in methods:
        figures = table.figures.get(method, {})
        per_dataset = {}
        for dataset in datasets:
            ours, note, seeds = _ours(chosen, method, dataset)
            per_dataset[dataset] = seeds
            if ours is None and note == NONE and dataset not in figures:
                continue
            lines.append(Line(method, dataset, ours, note, figures.get(dataset)))
        if table.average:
            complete = [per_dataset.get(d) or _ours(chosen, method, d)[2] for d in table.average]
            common = set.intersection(*(set(s) for s in complete)) if all(complete) else set()
            anything = any(k[0] == method and k[1] in table.average for k in chosen)
            ours = None
            if common:
                values = [float(np.mean([s[seed] for s in complete])) for seed in sorted(common)]
                ours = (*mean_se(values), len(values))
            if ours is not None or anything or AVG in figures:
                lines.append(Line(method, AVG, ours, "X" if anything and ours is None else "", figures.get(AVG)))
    return lines


def caption(paper: Paper, table: PaperTable, selection: str) -> tuple[str, str]:
    """(heading, legend) of a comparison table: the paper and its table, the selection method, how
    ours is computed."""
    heading = f"{table.title}: ours beside the paper, model selection: {selection}"
    avg = (f"Avg: the mean over {', '.join(display(d) for d in table.average)} per trial seed, X unless every one "
           f"is complete; " if table.average else "")
    legend = (f"Paper: {paper.cite()}, {table.source}; {paper.setting}. Ours: test accuracy (%), mean ± SE over "
              f"trial seeds (SE = std / sqrt(n), n trial seeds), each dataset's figure the mean over all its test "
              f"domains (X: not every test domain done); {avg}—: no figure (not reported in our sources, or not "
              f"run). {WITHIN}")
    return heading, legend


HEAD = ["Method", "Dataset", "Ours", "n", "Paper", "Ours − paper", "Within 2 SE"]


def _markdown_table(heading: str, legend: str, head: list[str], lines) -> str:
    """A section of the markdown comparison: heading, legend, then one row per line's `cells()`."""
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows += ["| " + " | ".join(line.cells()) + " |" for line in lines]
    return f"### {heading}\n\n{legend}\n\n" + "\n".join(rows)


def _latex_table(heading: str, legend: str, head: list[str], lines) -> str:
    """A booktabs `table` of the LaTeX comparison: the caption, `head` in bold, one row per line's `cells()`."""
    body = [" & ".join(_tex(c) for c in line.cells()) + " \\\\" for line in lines]
    return "\n".join(["\\begin{table}", "\\centering", f"\\caption{{{_tex(heading)}. {_tex(legend)}}}",
                      "\\begin{tabular}{l" + "l" + "c" * (len(head) - 2) + "}", "\\toprule",
                      " & ".join(f"\\textbf{{{_tex(h)}}}" for h in head) + " \\\\", "\\midrule",
                      *body, "\\bottomrule", "\\end{tabular}", "\\end{table}"])


def comparison_sections(found: Collected, paper: Paper):
    """Each (paper table, selection) of a classification paper, in the order written: the table,
    the selection and our lines beside the paper's (the markdown, LaTeX and CSV comparisons)."""
    for i, table in enumerate(paper.tables):
        for selection in SELECTIONS:
            yield table, selection, comparison_lines(paper, table, found.chosen[selection], first=i == 0)


def comparison_markdown(found: Collected, name: str) -> str:
    paper = load_paper(name)
    if paper.task == "retrieval":
        return retrieval_markdown(found, paper)
    parts = []
    for table, selection, lines in comparison_sections(found, paper):
        notes = "".join(f"\n- {note}" for note in table.notes)
        parts.append(_markdown_table(*caption(paper, table, selection), HEAD, lines)
                     + (f"\n\nNotes:{notes}" if notes else ""))
    return "\n\n".join(parts)


def comparison_latex(found: Collected, name: str) -> str:
    paper = load_paper(name)
    if paper.task == "retrieval":
        return retrieval_latex(found, paper)
    return "\n\n".join(_latex_table(*caption(paper, table, selection), HEAD, lines)
                       for table, selection, lines in comparison_sections(found, paper))


def comparison_csv(found: Collected, name: str) -> str:
    paper = load_paper(name)
    if paper.task == "retrieval":
        return retrieval_csv(found, paper)
    rows = []
    for table, selection, lines in comparison_sections(found, paper):
        for line in lines:
            mean, se, n = line.ours if line.ours is not None else ("", "", "")
            rows.append([selection, table.key, line.method, line.dataset,
                         "" if line.ours is None else f"{mean:.4f}", "" if line.ours is None else f"{se:.4f}", n,
                         line.ours_note if line.ours is None else "",
                         "" if line.paper is None else f"{line.paper[0]:.1f}",
                         "" if line.paper is None else str(line.paper[1]).lower(),
                         "" if line.difference is None else f"{line.difference:.4f}",
                         "" if line.within is None else str(line.within).lower()])
    return _csv(["selection", "table", "method", "dataset", "ours_mean", "ours_std_error", "trial_seeds", "ours_note",
                 "paper", "paper_about", "difference", "within_2se"], rows)


def write_comparison(found: Collected, name: str, out_dir: Path) -> list[Path]:
    """`compare_<name>.{md,tex,csv}` and, per paper table and selection with a figure of ours,
    `compare_<name>_<table>[_oracle].png`: our bars (± SE) with the paper's figure as a mark."""
    paper = load_paper(name)
    written = []
    for ext, text in (("md", comparison_markdown(found, name)), ("tex", comparison_latex(found, name)),
                      ("csv", comparison_csv(found, name))):
        path = out_dir / f"compare_{name}.{ext}"
        path.write_text(text if text.endswith("\n") else text + "\n")
        written.append(path)
    for i, table in enumerate(paper.tables):
        for selection in SELECTIONS:
            lines = [x for x in comparison_lines(paper, table, found.chosen[selection], first=i == 0)
                     if x.ours is not None]
            if not lines:
                continue
            groups = list(dict.fromkeys(x.cells()[1] for x in lines))
            rows: dict[str, dict] = {}
            marks = {}
            for x in lines:
                rows.setdefault(x.method, {})[x.cells()[1]] = x.ours
                if x.paper is not None:
                    marks[(x.method, x.cells()[1])] = x.paper[0]
            figure = Table(f"{table.title} ({selection})", groups, rows, 1, selection)
            path = out_dir / f"compare_{name}_{table.key}{SELECTION_SUFFIX[selection]}.png"
            write_figure(figure, path, marks=marks,
                         title=f"{table.title}, {selection}: ours (bars, ± SE) and the paper's figure (line)")
            written.append(path)
    return written


# ---------------------------------------------------------------- retrieval: ours beside published references
@dataclass
class RecallLine:
    model: tuple
    metric: str
    ours: tuple[float, float, int] | None  # mean, SE, trial seeds
    reference: tuple[float, bool, float]
    test_only: bool = False  # our runs trained nothing: one run is its figure for every seed (SE 0)

    @property
    def difference(self) -> float | None:
        return None if self.ours is None else self.ours[0] - self.reference[0]

    @property
    def within(self) -> bool | None:
        if self.difference is None or (self.ours[2] < 2 and not self.test_only):
            return None
        return within(self.difference, self.ours[1], self.reference[2])

    def cells(self) -> list[str]:
        ours = NONE if self.ours is None else f"{self.ours[0]:.2f} ± {self.ours[1]:.2f}"
        ref = self.reference
        decimals = max(0, round(-np.log10(2 * ref[2])))  # as printed: 82.2, 62.16
        seeds = "" if self.ours is None else str(self.ours[2])
        diff = NONE if self.difference is None else f"{self.difference:+.2f}"
        return [model_label(self.model), metric_label(self.metric), ours, seeds, f"{ref[0]:.{decimals}f}", diff,
                NONE if self.within is None else ("yes" if self.within else "no")]


RECALL_HEAD = ["Model", "Recall", "Ours", "n", "Reference", "Ours − reference", "Within 2 SE"]


def retrieval_sections(found: Collected, paper: Paper) -> list[tuple[RetrievalTable, list[RecallLine]]]:
    """Per retrieval table of ours, every reference row of its dataset beside our runs of the
    reference's method (zero_shot) with the same model (config.yaml's model_name and pretrained)."""
    out = []
    for table in found.retrieval:
        lines = []
        for ref in (r for r in paper.references if r.dataset == table.dataset):
            row = (paper.reference_method, ref.model)
            ours = table.rows.get(row, {})
            lines += [RecallLine(ref.model, metric, ours.get(metric), figure, row in table.test_only)
                      for metric, figure in ref.figures.items()]
        out.append((table, lines))
    return out


def retrieval_caption(paper: Paper, table: RetrievalTable) -> tuple[str, str]:
    refs = [r for r in paper.references if r.dataset == table.dataset]
    heading = f"{display(table.dataset)}: our {paper.reference_method} recall beside {paper.reference_title}"
    splits = "; ".join(sorted({f"{model_label(r.model)}: {r.split}" for r in refs}))
    ours = table.caption().split(":")[0]
    rule = WITHIN.replace("paper", "reference")[:-1]
    legend = (f"Reference: {paper.reference_source} ({splits}); {paper.setting}. Ours: {ours}, runs of "
              f"{paper.reference_method} whose config.yaml names the reference's model (model_name, pretrained), "
              f"recall (%) mean ± SE over trial seeds (n); —: no such run. {rule}, "
              f"except test-only runs (nothing trained, a fixed test set: the same figure for every seed, SE 0). "
              f"Not in our sources: {paper.not_in_sources or '-'}; see {paper.cite()}.")
    return heading, legend


def _no_reference(paper: Paper, table: RetrievalTable) -> str:
    known = sorted({display(r.dataset) for r in paper.references})
    return (f"{display(table.dataset)}: no reference figures in dg_heads/papers/{paper.name}.yaml "
            f"(it has {', '.join(known)})")


def _not_run(found: Collected, paper: Paper) -> str:
    missing = sorted({r.dataset for r in paper.references} - {t.dataset for t in found.retrieval})
    return (f"Reference datasets with no retrieval run here: {', '.join(display(d) for d in missing)}"
            if missing else "")


def retrieval_markdown(found: Collected, paper: Paper) -> str:
    parts = []
    for table, lines in retrieval_sections(found, paper):
        if not lines:
            parts.append(_no_reference(paper, table))
            continue
        parts.append(_markdown_table(*retrieval_caption(paper, table), RECALL_HEAD, lines))
    if not found.retrieval:
        parts.append("No retrieval run found: nothing to compare with the references.")
    if _not_run(found, paper):
        parts.append(_not_run(found, paper))
    return "\n\n".join(parts)


def retrieval_latex(found: Collected, paper: Paper) -> str:
    parts = []
    for table, lines in retrieval_sections(found, paper):
        if not lines:
            parts.append("% " + _no_reference(paper, table))
            continue
        parts.append(_latex_table(*retrieval_caption(paper, table), RECALL_HEAD, lines))
    return "\n\n".join(parts)


def retrieval_csv(found: Collected, paper: Paper) -> str:
    rows = []
    for table, lines in retrieval_sections(found, paper):
        for line in lines:
            mean, se, n = line.ours if line.ours is not None else ("", "", "")
            rows.append([table.dataset, line.model[0], line.model[1], paper.reference_method, line.metric,
                         "" if line.ours is None else f"{mean:.4f}", "" if line.ours is None else f"{se:.4f}", n,
                         line.cells()[4], "" if line.difference is None else f"{line.difference:.4f}",
                         "" if line.within is None else str(line.within).lower()])
    return _csv(["dataset", "model_name", "pretrained", "method", "metric", "ours_mean", "ours_std_error",
                 "trial_seeds", "reference", "difference", "within_2se"], rows)
