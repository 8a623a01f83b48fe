"""What a person and `dg-heads collect` read after each fit, validate and test of a retrieval run:
the recall table (printed), `metrics_<stage>.json` in the run folder, and TensorBoard's HParams
tab (`hp/val_rsum`, `hp/test_rsum`, `hp/test_i2t_r1`, ...). The retrieval counterpart of
`DomainReport`, whose bookkeeping it shares (which weights a table is of, the `val/*` of the
same checkpoint beside `test/*`, `results` for the `DoneMarker`)."""

from __future__ import annotations

import torch

from dg_heads.callbacks.domain_report import DomainReport
from dg_heads.tasks import metrics as names

COLUMNS = [("i2t R@1", "i2t_r1"), ("i2t R@5", "i2t_r5"), ("i2t R@10", "i2t_r10"),
           ("t2i R@1", "t2i_r1"), ("t2i R@5", "t2i_r5"), ("t2i R@10", "t2i_r10"), ("RSUM", "rsum")]


def retrieval_metrics(metrics: dict[str, object]) -> dict[str, float]:
    """The retrieval entries of logged metrics (`val/rsum`, `test/<dataset>/i2t_r1`, `test/n/<dataset>`)
    as plain floats."""
    out = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[0] in names.STAGES and (parts[-1] in names.RETRIEVAL_METRICS or parts[1:2] == [names.COUNT]):
            out[key] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return dict(sorted(out.items()))


def format_recall_table(values: dict[str, float], datasets: dict[str, list[str]]) -> str:
    """One row per evaluation dataset of each stage (`val`, `test`), and their mean where there
    are several: the images scored, recall@1/5/10 both ways (percent) and RSUM."""
    rows = [("dataset", "split", "images", *(title for title, _ in COLUMNS))]
    for split in names.STAGES:
        listed = datasets.get(split, [])
        for dataset in listed:
            prefix = f"{split}/{dataset}" if len(listed) > 1 else split
            if f"{prefix}/{names.RSUM}" not in values:
                continue
            n = values.get(names.key(split, names.COUNT, dataset))
            rows.append((dataset, split, "" if n is None else f"{int(n)}",
                         *(f"{values[f'{prefix}/{name}']:.2f}" for _, name in COLUMNS)))
        if len(listed) > 1 and f"{split}/{names.RSUM}" in values:
            rows.append(("mean", split, "", *(f"{values[f'{split}/{name}']:.2f}" for _, name in COLUMNS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


class RetrievalReport(DomainReport):
    """Reports the recalls (`val/*`, `test/*`, images scored per dataset) at the end of `fit`
    (the last validation), `validate` and `test`, as `metrics_fit.json`, `metrics_validate.json`
    and `metrics_test.json`; the table is printed on rank 0. Only what is read and shown differs
    from `DomainReport`: the recall entries, the recall table, `hp/<stage>_<recall>`."""

    def values(self, metrics: dict) -> dict[str, float]:
        return retrieval_metrics(metrics)

    def table(self, trainer, stage: str, values: dict[str, float]) -> str:
        datasets = {s: list(trainer.datamodule.eval_domains(s)) for s in names.STAGES}
        return format_recall_table(values, datasets)

    def hp_metrics(self, values: dict[str, float]) -> dict[str, float]:
        return {f"hp/{k.replace('/', '_')}": v for k, v in values.items()
                if k.count("/") == 1 and k.split("/")[1] in names.RETRIEVAL_METRICS}
