"""The Lightning subcommands of `lightning` / `dg-heads`: a LightningCLI in subclass mode.

Model and data are chosen by `class_path` in YAML; configs compose with repeated `--config`
and may interpolate (`${...}`, omegaconf mode). The resolved config is saved with every run,
overwriting on a requeued job. Entry point and error handling: `dg_heads.cli.main`.

The run's files (tables, `metrics_*.json`, `splits.json`, HParams, method files) come from the
callbacks every dg-heads model installs (`dg_heads.callbacks`), as with a plain `Trainer`; the
CLI only adds its two arguments: `--test_after_fit` (`selection.evaluate_selected_checkpoint`
after fit) and `--done_marker` (a `callbacks.DoneMarker`, and a run that has one is skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from lightning.pytorch.cli import LightningCLI

from dg_heads.callbacks import DoneMarker
from dg_heads.errors import ConfigError, parser_error
from dg_heads.resume import resume_checkpoint
from dg_heads.selection import evaluate_selected_checkpoint

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
    },
}


# Trainer arguments where an int and a float mean different things (`1`: one batch, `1.0`: all).
INT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def int_before_float(parser) -> None:
    """Read `--trainer.limit_val_batches 1` as one batch, not as 1.0 (every batch).

    The Trainer annotates these `Optional[Union[int, float]]`, but typing's cache of unions
    (equal whatever their order) hands the parser `Union[float, int, None]` once something has
    built that first, and jsonargparse then takes the first type that fits: a quick `1`-batch
    smoke run silently validated everything (Lightning issue #21259). The type is set int-first."""
    for action in getattr(parser, "_actions", []):
        if action.dest.removeprefix("trainer.") in INT_OR_FRACTION and hasattr(action, "_typehint"):
            action._typehint = Union[int, float, None]


class DGHeadsCLI(LightningCLI):
    """LightningCLI with dg-heads defaults, `--test_after_fit`, `--done_marker` and resuming."""

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

    def init_parser(self, **kwargs):
        """The parsers of the CLI and of each subcommand end a parse error with one line: jsonargparse
        prints the usage and a nested explanation of every Union member it tried."""
        parser = super().init_parser(**kwargs)

        def error(message: str, ex: Exception | None = None):
            raise ConfigError(parser_error(f"error: {message}")) from None

        parser.error = error
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        int_before_float(parser)
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

    def instantiate_trainer(self, **kwargs):
        """The trainer, with a `DoneMarker` for `--done_marker`: written after the test of the
        selected checkpoint under `--test_after_fit`, else after the subcommand's own stage."""
        trainer = super().instantiate_trainer(**kwargs)
        config = self._subcommand_config()
        if config.get("done_marker"):
            stage = "test" if self.subcommand == "fit" and config.get("test_after_fit") else self.subcommand
            trainer.callbacks.append(DoneMarker(config["done_marker"], stage=stage))
        return trainer

    def before_fit(self) -> None:
        """`--ckpt_path last` resumes from the furthest of the last and the SLURM-requeue checkpoints."""
        if self.config_init["fit"].get("ckpt_path") == "last":
            self.config_init["fit"]["ckpt_path"] = resume_checkpoint(self.trainer)

    def after_fit(self) -> None:
        """With `--test_after_fit`, evaluate the checkpoint that training-domain validation chose:
        its per-domain `val/acc` (the selection evidence) and the held-out `test/acc`."""
        if self._subcommand_config().get("test_after_fit"):
            evaluate_selected_checkpoint(self.trainer, self.model, self.datamodule)
