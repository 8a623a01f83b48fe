"""What a person and `dg-heads collect` read after each fit, validate and test of a retrieval run:
the recall table (printed), `metrics_<stage>.json` in the run folder, and TensorBoard's HParams
tab (`hp/val_rsum`, `hp/test_rsum`, `hp/test_i2t_r1`, ...). The retrieval counterpart of
`DomainReport`, whose bookkeeping it shares (which weights a table is of, the `val/*` of the
same checkpoint beside `test/*`, `results` for the `DoneMarker`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from dg_heads.callbacks.domain_report import DomainReport, log_hparams_session
from dg_heads.reporting import limited_splits, skipped_images
from dg_heads.run_files import write_run_file
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
    and `metrics_test.json`; the table is printed on rank 0."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        values = {k: v for k, v in retrieval_metrics(trainer.callback_metrics).items() if k.startswith("val/")}
        self._validated = (self._weights(trainer), values)
        if trainer.state.fn == "validate":
            self.report(trainer, pl_module, "validate", values)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.report(trainer, pl_module, "fit", retrieval_metrics(trainer.callback_metrics))

    def on_test_end(self, trainer, pl_module) -> None:
        values = {k: v for k, v in retrieval_metrics(trainer.callback_metrics).items() if k.startswith("test/")}
        if self._validated is not None and self._validated[0] == self._weights(trainer):
            values = {**self._validated[1], **values}
        self.report(trainer, pl_module, "test", values)

    def report(self, trainer, pl_module, stage: str, accs: dict[str, float]) -> None:
        values = dict(sorted(accs.items()))
        self.results[stage] = {**values, "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        if not values:
            return
        datamodule = trainer.datamodule
        sizes = {s: datamodule.eval_sizes(s) for s in names.STAGES} if hasattr(datamodule, "eval_sizes") else {}
        notes = skipped_images(values, sizes, limited_splits(trainer))  # raises if a dataset scored no image
        write_run_file(trainer, f"metrics_{stage}.json", json.dumps(self.results[stage], indent=2, sort_keys=True))
        if not trainer.is_global_zero:
            return
        if stage in self.print_stages:
            datasets = {s: list(datamodule.eval_domains(s)) for s in names.STAGES}
            print(f"\n{self.source_line(trainer, stage)}\n" + format_recall_table(values, datasets), flush=True)
        for note in notes:
            print(f"warning: {note}", file=sys.stderr, flush=True)
        if trainer.logger is not None and hasattr(pl_module, "hparams_for_logging"):
            hp_metrics = {f"hp/{k.replace('/', '_')}": v for k, v in values.items()
                          if k.count("/") == 1 and k.split("/")[1] in names.RETRIEVAL_METRICS}
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    log_hparams_session(Path(logger.log_dir), pl_module.hparams_for_logging(), hp_metrics,
                                        trainer.global_step)
                else:
                    logger.log_hyperparams(pl_module.hparams_for_logging(), hp_metrics)
                    logger.save()
