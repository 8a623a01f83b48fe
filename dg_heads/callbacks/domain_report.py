"""What a person and `dg-heads collect` read after each fit, validate and test: the per-domain
accuracy table (printed), `metrics_<stage>.json` in the run folder, and TensorBoard's HParams tab."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from dg_heads.reporting import accuracy_metrics, format_table, limited_splits, skipped_images
from dg_heads.run_files import write_run_file
from dg_heads.tasks import metrics as names


class DomainReport(Callback):
    """Reports the accuracies (`val/acc*`, `test/acc*`, images scored per domain) at the end of
    `fit` (the last validation), `validate` and `test`, as `metrics_fit.json`,
    `metrics_validate.json` and `metrics_test.json` (plus `global_step` and `epoch`). A test of
    each test domain's `in` and `out` splits (the DataModule's `oracle_test()`, which
    `selection.evaluate_selected_checkpoint` runs on the last weights) is `metrics_oracle.json`
    instead: `test/acc/<domain>/in`, `test/acc/<domain>/out` (no mean of the two), never
    `metrics_test.json`.

    `metrics_test.json` also holds the `val/*` accuracies when they were measured on the same
    weights: the latest validation loaded the same checkpoint (`validate(ckpt_path="best")` then
    `test(ckpt_path="best")`: the training-domain validation evidence of the tested model, what
    `collect` selects by), or ran on the weights in memory at the same global step. The report of
    each stage is kept in `results` (the `DoneMarker` writes it).

    Every process computes the same (synced) numbers, so a domain of which no image was read stops
    all of them; printing and the HParams tab are rank 0's, the file `write_run_file`'s."""

    def __init__(self, print_stages: tuple[str, ...] = ("fit", "validate", "test")) -> None:
        """`print_stages`: the stages whose table is printed (every stage's file is written)."""
        self.print_stages = tuple(print_stages)
        self.results: dict[str, dict] = {}
        self._validated: tuple[tuple, dict[str, float]] | None = None  # (weights, val accuracies)

    @staticmethod
    def _weights(trainer) -> tuple:
        """Which weights an evaluation saw: the checkpoint it loaded (None: those in memory) and the step."""
        loaded = trainer.ckpt_path if trainer.state.fn in ("validate", "test") else None
        return loaded, trainer.global_step

    def on_fit_start(self, trainer, pl_module) -> None:
        self._validated = None

    # ---- what the task decides (`RetrievalReport` overrides these three); the rest is shared
    def values(self, metrics: dict) -> dict[str, float]:
        """The entries of the logged metrics this report covers, as plain floats."""
        return accuracy_metrics(metrics)

    def table(self, trainer, stage: str, values: dict[str, float]) -> str | None:
        """The printed table of a stage (None: none)."""
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "source_domains"):
            return None
        return format_table(values, datamodule.source_domains, datamodule.test_domains)

    def hp_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """The HParams tab's metrics (`hp/val_acc`, `hp/test_acc/<domain>`, ...)."""
        return {f"hp/{k.replace('/acc', '_acc')}": v for k, v in values.items() if "/acc" in k}

    # ---- the stages
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        values = {k: v for k, v in self.values(trainer.callback_metrics).items() if k.startswith("val/")}
        self._validated = (self._weights(trainer), values)
        if trainer.state.fn == "validate":
            self.report(trainer, pl_module, "validate", values)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.report(trainer, pl_module, "fit", self.values(trainer.callback_metrics))

    def on_test_end(self, trainer, pl_module) -> None:
        values = {k: v for k, v in self.values(trainer.callback_metrics).items() if k.startswith("test/")}
        if getattr(trainer.datamodule, "oracle_pass", False):
            values.pop(names.key("test", names.ACCURACY), None)  # the mean of `in` and `out` splits means nothing
            self.report(trainer, pl_module, "oracle", values)
            return
        if self._validated is not None and self._validated[0] == self._weights(trainer):
            values = {**self._validated[1], **values}
        self.report(trainer, pl_module, "test", values)

    @staticmethod
    def source_line(trainer, stage: str) -> str:
        """Which weights the table is of, and the run folder: `test of checkpoint
        runs/.../best-step=40.ckpt; run folder runs/pacs/hap/version_0`."""
        loaded = trainer.ckpt_path if stage in ("validate", "test") else None
        weights = f"checkpoint {loaded}" if loaded else (
            f"the weights at the end of training (global step {trainer.global_step})" if stage == "fit"
            else f"the weights in memory (global step {trainer.global_step})")
        folder = trainer.logger.log_dir if trainer.logger is not None else trainer.default_root_dir
        return f"{stage} of {weights}; run folder {folder}"

    def report(self, trainer, pl_module, stage: str, values: dict[str, float]) -> None:
        values = dict(sorted(values.items()))
        self.results[stage] = {**values, "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        if not values:
            return
        datamodule = trainer.datamodule
        sizes = {s: datamodule.eval_sizes(s) for s in names.STAGES} if hasattr(datamodule, "eval_sizes") else {}
        # raises, on every process, if a domain scored no image (a split the trainer limits is not compared)
        notes = skipped_images(values, sizes, limited_splits(trainer))
        write_run_file(trainer, f"metrics_{stage}.json", json.dumps(self.results[stage], indent=2, sort_keys=True))
        if not trainer.is_global_zero:
            return
        table = self.table(trainer, stage, values) if stage in self.print_stages else None
        if table is not None:
            print(f"\n{self.source_line(trainer, stage)}\n{table}", flush=True)
        for note in notes:
            print(f"warning: {note}", file=sys.stderr, flush=True)
        if stage != "oracle" and trainer.logger is not None and hasattr(pl_module, "hparams_for_logging"):
            hp_metrics = self.hp_metrics(values)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    log_hparams_session(Path(logger.log_dir), pl_module.hparams_for_logging(), hp_metrics,
                                        trainer.global_step)
                else:
                    logger.log_hyperparams(pl_module.hparams_for_logging(), hp_metrics)
                    logger.save()


HPARAMS_RUN = "hparams"  # the run's HParams session: `<run folder>/hparams/`, a TensorBoard run of its own


def log_hparams_session(log_dir: Path, params: dict, metrics: dict[str, float], step: int) -> None:
    """The run's row of TensorBoard's HParams tab, in `<log_dir>/hparams/`: one session (the
    hyper-parameters) and the `hp/*` accuracies as scalars, and no experiment summary.

    Why not `TensorBoardLogger.log_hyperparams`: it writes an experiment summary each call, and
    TensorBoard keeps the first summary of a tag in a run and the first experiment summary it
    finds among all runs: the fit's (no `hp/test_acc`), of one run (its keys only, every column
    marked as not differing, so the tab shows the first five by name: `clip/...`). Without one,
    TensorBoard builds the experiment from every run's session: the columns are the union of the
    runs' keys, those whose values differ between runs first (the tab shows those), and the
    metrics are the scalar tags of the session folders, only the `hp/*` written here. Each
    report writes the latest values (the selected checkpoint's `val` and `test` last)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    _, start, end = hparams(params, metrics)
    writer = SummaryWriter(str(log_dir / HPARAMS_RUN))
    try:
        file_writer = writer._get_file_writer()
        file_writer.add_summary(start, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        file_writer.add_summary(end, step)
        writer.flush()
    finally:
        writer.close()
