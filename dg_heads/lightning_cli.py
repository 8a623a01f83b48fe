"""The Lightning subcommands of `lightning` / `dg-heads`: a LightningCLI in subclass mode.

Model and data are chosen by `class_path` in YAML; configs compose with repeated `--config`
and may interpolate (`${...}`, omegaconf mode). The resolved config is saved with every run,
overwriting on a requeued job. Entry point and error handling: `dg_heads.cli.main`.

The run's files (tables, `metrics_*.json`, `splits.json`, HParams, method files) come from the
callbacks every dg-heads model installs (`dg_heads.callbacks`), as with a plain `Trainer`; the
CLI only adds its arguments: `--test_after_fit` (`selection.evaluate_selected_checkpoint`
after fit), `--done_marker` (a `callbacks.DoneMarker`, and a run that has one is skipped) and
`--ddp_timeout` (how long a DDP collective may wait before the run ends with an error).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from argparse import ArgumentError
from datetime import timedelta
from pathlib import Path
from typing import Optional, Union

import yaml
from lightning.pytorch.cli import LightningCLI, instantiate_class
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment

from dg_heads import compat
from dg_heads.callbacks import DoneMarker
from dg_heads.cli_hints import expand_help, name_yaml_file, suggest
from dg_heads.data.registry import dataset_name
from dg_heads.errors import ConfigError, DGHeadsError, parser_error
from dg_heads.leakage import check_test_domains
from dg_heads.resume import resume_checkpoint, resume_run_folder
from dg_heads.selection import evaluate_selected_checkpoint
from dg_heads.tasks import task_of
from dg_heads.tasks.metrics import SELECTION

# Every run's logger and checkpoints, for any composition of configs/ (the one place they are set).
# `{dataset}` and `{method}` in the logger's save_dir and name are filled in by `name_run_folder`.
TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs/{dataset}", "name": "{method}", "default_hp_metric": False},
    },
    # Always installed, after any callbacks a config adds (LightningCLI appends trainer_defaults'
    # callbacks: a config's `trainer.callbacks` list adds to these, it cannot drop them).
    "callbacks": [
        # the model selected by validation: classification's val/acc here, the data's task's metric at
        # run time (`select_by_task`: retrieval's val/rsum)
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"monitor": SELECTION["classification"][0], "mode": SELECTION["classification"][1],
                       "filename": "best-{step}"}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",  # the latest state, to resume from
         "init_args": {"filename": "last", "enable_version_counter": False}},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
    ],
    # checkpoints written whole or not at all (a run killed while saving keeps its previous one)
    "plugins": [{"class_path": "dg_heads.resume.AtomicCheckpointIO"}],
}


# ------------------------------------------------- run defaults: checkpoints and the run folder
def trainer_defaults() -> dict:
    """TRAINER_DEFAULTS with its callbacks built, fresh for every CLI: a checkpoint callback keeps
    its run's best score, so two runs in one process (tests, notebooks) must not share one."""
    return {**TRAINER_DEFAULTS, "callbacks": [instantiate_class((), c) for c in TRAINER_DEFAULTS["callbacks"]]}


def name_run_folder(config) -> None:
    """Fill `{dataset}` and `{method}` in the logger's save_dir and name from what runs: the data's
    dataset (`pacs`) and the model class's `run_name(init_args)` (`hap`, `lora`, `aat_ga`,
    `finetune`, ...), so a run lands in `runs/pacs/hap/version_N` with no folder set by hand. A
    folder the user set (no placeholder: the sweep's job folders) is left as it is."""
    loggers = config.get("trainer.logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    data, model = config.get("data") or {}, config.get("model") or {}
    dataset = data.get("init_args", {}).get("dataset")
    try:
        dataset = dataset_name(dataset) if dataset else str(data.get("class_path", "data")).rsplit(".", 1)[-1].lower()
    except DGHeadsError:  # an own dataset (a folder's name or path): its folder's name
        dataset = Path(str(dataset).rstrip("/")).name or str(dataset)  # (a bad one: the DataModule says so)
    module, _, name = str(model.get("class_path", "model")).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    method = cls.run_name(model.get("init_args")) if hasattr(cls, "run_name") else name.lower()
    for logger in loggers:
        args = logger.get("init_args") if hasattr(logger, "get") else None
        for key in ("save_dir", "name"):
            if args is not None and isinstance(args.get(key), str):
                args[key] = args[key].replace("{dataset}", dataset).replace("{method}", method)


# Trainer arguments where an int and a float mean different things (`1`: one batch, `1.0`: all).
INT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def int_before_float(parser) -> None:
    """Read `--trainer.limit_val_batches 1` as one batch, not as 1.0 (every batch).

    The Trainer annotates these `Optional[Union[int, float]]`, but typing's cache of unions
    (equal whatever their order) hands the parser `Union[float, int, None]` once something has
    built that first, and jsonargparse then takes the first type that fits: a quick `1`-batch
    smoke run silently validated everything (Lightning issue #21259). The type is set int-first."""
    dests = (*INT_OR_FRACTION, *(f"trainer.{name}" for name in INT_OR_FRACTION))
    compat.set_argument_type(parser, dests, Union[int, float, None])


def check_slurm_layout(config) -> None:
    """Under `srun` every SLURM task is one DDP process: `--ntasks-per-node` must equal
    `trainer.devices` and `--nodes` must equal `trainer.num_nodes`, else the ranks wait for
    processes that never come (Lightning checks this only when it starts the processes itself)."""
    if not SLURMEnvironment.detect():
        return
    for env, flag, key in (("SLURM_NTASKS_PER_NODE", "--ntasks-per-node", "devices"),
                           ("SLURM_NNODES", "--nodes", "num_nodes")):
        given, wanted = config.get(f"trainer.{key}"), os.environ.get(env, "")
        count = len(given) if isinstance(given, (list, tuple)) else given
        if wanted.isdigit() and str(count).isdigit() and int(count) != int(wanted):
            raise DGHeadsError(f"SLURM started this job with {flag}={wanted} ({env}) but trainer.{key} is {given}: "
                               f"they must match (one process per device); set --trainer.{key} {wanted} "
                               f"or submit with {flag}={count}")


def select_by_task(trainer, datamodule) -> None:
    """Point the default checkpoint selection (a `ModelCheckpoint` monitoring classification's
    `val/acc`) at the metric of the data's task (`dg_heads.tasks.metrics.SELECTION`: retrieval's
    `val/rsum`). A monitor the user configured otherwise is left as it is."""
    task = task_of(datamodule)
    default_monitor, _ = SELECTION["classification"]
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor == default_monitor and task.monitor != default_monitor:
            compat.set_checkpoint_monitor(callback, task.monitor, task.mode)


# ------------------------------------------------- the order of --config files (enforced here only)
def config_files(argv: list[str]) -> list[str]:
    """The `--config` files of a command line, in the order given."""
    return [argv[i + 1] if arg == "--config" else arg.split("=", 1)[1] for i, arg in enumerate(argv)
            if (arg == "--config" and i + 1 < len(argv)) or arg.startswith("--config=")]


def _model_section(path: str) -> dict | None:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):  # jsonargparse names the file and what is wrong with it
        return None
    model = loaded.get("model") if isinstance(loaded, dict) else None
    return model if isinstance(model, dict) else None


def check_config_order(argv: list[str]) -> None:
    """Later `--config` files win, key by key. A file that changes the model without choosing it
    (a `model:` section with no `class_path`: configs/trainer/demo.yaml, a configs/method/hap_variants/
    overlay) therefore goes after the file that chooses it (`model.class_path`: configs/method/*.yaml).
    The one place this order is checked (Makefile, README, tests and demos just follow it); given the
    other way round, jsonargparse stops at the overlay with `Option 'clip.model_name' is not accepted`,
    naming neither file. An overlay after some chooser is left alone: it changes that model."""
    overlay, chosen = None, False
    for path in config_files(argv):
        model = _model_section(path)
        if model is None:
            continue
        if "class_path" not in model:
            overlay = overlay or (None if chosen else path)  # after a chooser it changes that model: fine
        elif overlay:
            raise DGHeadsError(
                f"--config {overlay} changes the model (a `model:` section without class_path) but comes before "
                f"--config {path}, which chooses the model (model.class_path): give {overlay} after it "
                f"(later files win)")
        else:
            chosen = True


class _NoTips(logging.Filter):
    """Lightning's advertisements (`💡 Tip: For seamless cloud logging ...`) look like messages about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())


class DGHeadsCLI(LightningCLI):
    """LightningCLI with dg-heads defaults, `--test_after_fit`, `--done_marker` and resuming."""

    def __init__(self, args=None, run: bool = True) -> None:
        if args is None:  # `--model.help HeadPurification`: the short class name will do
            sys.argv[1:] = expand_help(sys.argv[1:])
        elif isinstance(args, list):
            args = expand_help(args)
        self._argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        check_config_order(self._argv)
        try:
            super().__init__(
                model_class=None,
                datamodule_class=None,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"parser_mode": "omegaconf"},
                trainer_defaults=trainer_defaults(),
                args=args,
                run=run,
                auto_configure_optimizers=False,
            )
        except ArgumentError as error:  # only a parser raises it: the command line's, or (Lightning >= 2.5)
            raise self.config_error(error) from None  # the re-parse of `--ckpt_path`'s hyper-parameters

    def init_parser(self, **kwargs):
        """The parsers of the CLI and of each subcommand raise `ArgumentError` on a parse error
        (argparse's public `exit_on_error=False`, which jsonargparse honours) instead of printing
        the usage and a nested explanation of every Union member tried, then exiting: `__init__`
        makes it one line (`config_error`)."""
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def config_error(self, error: ArgumentError) -> ConfigError:
        """jsonargparse's error as one line: the key, what was wrong, the file of a YAML syntax
        error and the nearest option to an unknown one."""
        line = name_yaml_file(parser_error(f"error: {error}"), self._argv)
        return ConfigError(suggest(line, getattr(self, "parser", None)))

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        """`validate` and `test` print dg-heads's per-domain table only (`DomainReport`), not also
        Lightning's metrics table (`--verbose true` brings it back)."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            parser.set_defaults(verbose=False)
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        int_before_float(parser)
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After `fit`, test the checkpoint selected by validation (val/acc, training-domain validation; "
                 "retrieval: val/rsum).",
        )
        parser.add_argument(
            "--ddp_timeout", type=Optional[timedelta], default=None,
            help="DDP only: how long ('h:m:s') a collective may wait for the other processes before the run "
                 "stops with an error (a hang, e.g. a process that took another path, ends the job instead of "
                 "sitting until the time limit). Default: the strategy's own (Lightning: 0:30:00). A timeout "
                 "set in `trainer.strategy.init_args.timeout` wins.",
        )
        parser.add_argument(
            "--strict", type=bool, default=False,
            help="Make warnings about a flawed evaluation errors (testing on a domain the checkpoint trained on).",
        )
        parser.add_argument(
            "--done_marker", type=Optional[str], default=None,
            help="A file written when the run finished; if it exists, the run is skipped (sweeps relaunch safely).",
        )

    def _subcommand_config(self) -> dict:
        return self.config.get(self.subcommand, {}) if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        check_slurm_layout(self._subcommand_config())
        name_run_folder(self._subcommand_config())
        if self.subcommand == "fit" and self._subcommand_config().get("ckpt_path") == "last":
            resume_run_folder(self._subcommand_config())
        marker = self._subcommand_config().get("done_marker")
        if marker and Path(marker).exists():
            print(f"dg-heads: {marker} exists: this run finished earlier; nothing to do", flush=True)
            raise SystemExit(0)

    def instantiate_trainer(self, **kwargs):
        """The trainer, with a `DoneMarker` for `--done_marker`: written after the test of the
        selected checkpoint under `--test_after_fit`, else after the subcommand's own stage.
        Under `--test_after_fit` one table is printed, the selected checkpoint's (its `val` and
        `test` rows); the files of every stage are written as always."""
        config = self._subcommand_config()
        plugins = (self.config_init.get(self.subcommand, self.config_init) if self.subcommand
                   else self.config_init).get("trainer", {}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            # SLURM's requeue signal is handled at a step every process agrees on (RequeueOnSignal),
            # not by Lightning's handler, which checkpoints inside the signal handler
            kwargs.setdefault("plugins", [*plugins, SLURMEnvironment(auto_requeue=False)])
        trainer = super().instantiate_trainer(**kwargs)
        compat.set_ddp_timeout(trainer.strategy, config.get("ddp_timeout"))
        select_by_task(trainer, self.datamodule)
        if self.subcommand == "fit" and config.get("test_after_fit"):
            trainer.callbacks.append(task_of(self.datamodule).report(print_stages=("test",)))
        if config.get("done_marker"):
            stage = "test" if self.subcommand == "fit" and config.get("test_after_fit") else self.subcommand
            trainer.callbacks.append(DoneMarker(config["done_marker"], stage=stage))
        return trainer

    def _check_leakage(self, checkpoint_path=None) -> None:
        config = self._subcommand_config()
        strict = bool(config.get("strict"))
        if checkpoint_path is None:
            check_test_domains(config.get("ckpt_path"), self.datamodule, strict)
        # a model that starts from another run's weights (AAT's `init_checkpoint`): the same check
        check_test_domains(getattr(self.model, "init_checkpoint", None), self.datamodule, strict)

    def before_test(self) -> None:
        """A test domain the checkpoint trained on: one warning line (`--strict true`: an error)."""
        self._check_leakage()

    def before_predict(self) -> None:
        self._check_leakage()

    def before_fit(self) -> None:
        """`--ckpt_path last` resumes from the furthest of the last and the SLURM-requeue checkpoints.
        A model that starts from a checkpoint that trained on a test domain: one warning line."""
        self._check_leakage(checkpoint_path=False)
        if self.config_init["fit"].get("ckpt_path") == "last":
            self.config_init["fit"]["ckpt_path"] = resume_checkpoint(self.trainer)

    def after_fit(self) -> None:
        """With `--test_after_fit`, evaluate the checkpoint that training-domain validation chose:
        its per-domain `val/acc` (the selection evidence) and the held-out `test/acc`."""
        if self._subcommand_config().get("test_after_fit"):
            evaluate_selected_checkpoint(self.trainer, self.model, self.datamodule)
