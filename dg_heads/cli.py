"""The `lightning` / `dg-heads` / `python -m dg_heads` command: a LightningCLI in subclass mode.

Model and data are chosen by `class_path` in YAML; configs compose with repeated `--config`
and may interpolate (`${...}`, omegaconf mode). The resolved config is saved with every run,
overwriting on a requeued job. A user mistake prints one `error:` line and exits with 2.
"""

from __future__ import annotations

import sys
from typing import Optional
from pathlib import Path

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dg_heads.errors import DGHeadsError, one_line
from dg_heads.resume import newest_checkpoint, purge_logged_after, write_done_marker
from dg_heads.reporting import accuracy_metrics, format_table, run_dir, skipped_images, write_metrics

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
    },
}


class DGHeadsCLI(LightningCLI):
    """LightningCLI with dg-heads defaults, `--test_after_fit`, and end-of-run reports."""

    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After `fit`, test the checkpoint selected by val/acc (training-domain validation).",
        )
        parser.add_argument(
            "--done_marker", type=Optional[str], default=None,
            help="A file written when the run finished; if it exists, the run is skipped (sweeps relaunch safely).",
        )

    def _subcommand_config(self) -> dict:
        return self.config.get(self.subcommand, {}) if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        marker = self._subcommand_config().get("done_marker")
        if marker and Path(marker).exists():
            print(f"dg-heads: {marker} exists: this run finished earlier; nothing to do", flush=True)
            raise SystemExit(0)

    def before_fit(self) -> None:
        """`--ckpt_path last` resumes from the furthest of the last and the SLURM-requeue checkpoints."""
        if self.config_init["fit"].get("ckpt_path") != "last":
            return
        found = newest_checkpoint(self.trainer)
        self.config_init["fit"]["ckpt_path"] = None if found is None else str(found[0])
        if found is not None:
            purge_logged_after(self.trainer, found[1])
            print(f"dg-heads: resuming from {found[0]} at global step {found[1]}", flush=True)

    def _report(self, stage: str, earlier: dict[str, float] | None = None) -> dict[str, float]:
        """Print the per-domain table, save `metrics_<stage>.json`, fill the HParams tab."""
        trainer, model = self.trainer, self.model
        accs = {**(earlier or {}), **accuracy_metrics(trainer.callback_metrics)}
        if not accs or not trainer.is_global_zero:
            return accs
        datamodule = self.datamodule
        print("\n" + format_table(accs, datamodule.source_domains, datamodule.test_domains), flush=True)
        if hasattr(datamodule, "eval_sizes"):
            for note in skipped_images(accs, {s: datamodule.eval_sizes(s) for s in ("val", "test")}):
                print(f"warning: {note}", file=sys.stderr, flush=True)
        folder = run_dir(trainer)
        if folder is not None:
            extra = {"global_step": trainer.global_step, "epoch": trainer.current_epoch}
            write_metrics(folder, stage, accs, extra)
        if trainer.logger is not None and hasattr(model, "hparams_for_logging"):
            hp_metrics = {f"hp/{k.replace('/acc', '_acc')}": v for k, v in accs.items() if "/acc" in k}
            trainer.logger.log_hyperparams(model.hparams_for_logging(), hp_metrics)
            trainer.logger.save()
        return accs

    def after_fit(self) -> None:
        """With `--test_after_fit`, evaluate the checkpoint that training-domain validation chose:
        its per-domain `val/acc` (the selection evidence) and the held-out `test/acc`."""
        if not self._subcommand_config().get("test_after_fit"):
            self._mark_done(self._report("fit"))
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt = "best" if checkpoint is not None and checkpoint.best_model_path else None
        self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        val = accuracy_metrics(self.trainer.callback_metrics)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        self._mark_done(self._report("test", earlier=val))

    def _mark_done(self, accs: dict[str, float]) -> None:
        marker = self._subcommand_config().get("done_marker")
        if marker and self.trainer.is_global_zero:
            write_done_marker(Path(marker), {**accs, "global_step": self.trainer.global_step})

    def after_validate(self) -> None:
        self._report("validate")

    def after_test(self) -> None:
        self._report("test")


def main(args: list[str] | None = None) -> None:
    """Console entry point; user mistakes end as one line on stderr and exit code 2.

    Subcommands: Lightning's `fit`, `validate`, `test`, `predict`; `export` (a checkpoint to a
    plain open_clip weights file); `prepare` (get and verify a benchmark); `splits` (print
    DomainBed's splits); `sweep` (a job list for a SLURM array); `collect` (result tables)."""
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv[:1] == ["export"]:
            from dg_heads.export_cli import main as export_main

            export_main(argv[1:])
            return
        if argv[:1] in (["prepare"], ["splits"]):
            from dg_heads import data_cli

            getattr(data_cli, f"{argv[0]}_main")(argv[1:])
            return
        if argv[:1] in (["sweep"], ["collect"]):
            import importlib

            importlib.import_module(f"dg_heads.{argv[0]}").main(argv[1:])
            return
        DGHeadsCLI(args=args)
    except DGHeadsError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:  # killed or requeued (SLURM): the checkpoints on disk are the state to resume
        print("dg-heads: stopped by SIGTERM; run the same command again to resume (--ckpt_path last)",
              file=sys.stderr)
        sys.exit(143)


if __name__ == "__main__":
    main()
