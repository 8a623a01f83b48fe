"""The `lightning` / `dg-heads` / `python -m dg_heads` command.

Lightning's subcommands (`fit`, `validate`, `test`, `predict`) go to `DGHeadsCLI`
(`dg_heads.lightning_cli`); the others are small programs of their own. Lightning is imported
only for the former, so `sweep`, `collect`, `splits` and `prepare` start in well under a second.
A user mistake prints one `error:` line and exits with 2.
"""

from __future__ import annotations

import importlib
import sys

from dg_heads import environment
from dg_heads.collective_failure import collective_failure_message, is_collective_failure
from dg_heads.errors import DGHeadsError, user_message

# Lightning's subcommands, with their one line for `--help`
LIGHTNING = {
    "fit": "train a method (--test_after_fit true: then test the checkpoint selected by val/acc)",
    "validate": "score the source domains' `out` splits (training-domain validation)",
    "test": "score the held-out test domains",
    "predict": "predict the held-out domains' images into predictions.csv in the run folder",
}
# subcommand -> ("module:function" that runs it on the remaining arguments, its one line)
TOOLS = {
    "sweep": ("dg_heads.sweep:main",
              "a sweep spec to jobs: print the sbatch line, run them here (--launcher local) or submit"),
    "collect": ("dg_heads.collect:main",
                "DomainBed tables (both selections) of sweep jobs or runs (.md, .tex, .csv, .png); --compare PAPER"),
    "prepare": ("dg_heads.data_cli:prepare_main", "fetch if possible and verify a dataset's copy (DG or caption data)"),
    "splits": ("dg_heads.data_cli:splits_main", "print a dataset's DomainBed in/out splits as JSON"),
    "export": ("dg_heads.export_cli:main", "a checkpoint to a plain open_clip weights file"),
    "atlas": ("dg_heads.atlas.cli:main", "every head of a model on one HTML page: TextSpan, AAT, HAP measures"),
    "weights": ("dg_heads.weights:main", "fetch open_clip's pretrained weights MODEL TAG into the cache (login node)"),
}


def usage() -> str:
    """What `dg-heads --help` prints: every subcommand with one line."""
    width = max(map(len, [*LIGHTNING, *TOOLS]))
    lines = ["usage: dg-heads SUBCOMMAND [options]   (also `lightning` and `python -m dg_heads`)", "",
             "Lightning subcommands (options: a YAML --config, any key as --key value):"]
    lines += [f"  {name:<{width}}  {line}" for name, line in LIGHTNING.items()]
    lines += ["", "dg-heads tools:"]
    lines += [f"  {name:<{width}}  {line}" for name, (_, line) in TOOLS.items()]
    lines += ["", "`dg-heads SUBCOMMAND --help` lists a subcommand's options."]
    return "\n".join(lines)


def run_lightning(args: list[str] | None) -> None:
    """A LightningCLI run; a SLURM requeue or kill (SIGTERM) ends with exit code 143."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from dg_heads.callbacks.requeue import Requeued
    from dg_heads.lightning_cli import DGHeadsCLI

    try:
        DGHeadsCLI(args=args)
    except Requeued as stop:  # checkpointed on SLURM's signal and requeued (RequeueOnSignal said where)
        # 143 on rank 0, whose code is the run's; 0 on the others: Lightning's local launcher kills
        # rank 0 at once when a child it started exits non-zero, before rank 0 has finished
        sys.exit(143 if stop.rank == 0 else 0)
    except SIGTERMException:  # killed or requeued (SLURM): the checkpoints on disk are the state to resume
        print("dg-heads: stopped by SIGTERM; run the same command again to resume (--ckpt_path last)",
              file=sys.stderr)
        sys.exit(143)
    except Exception as error:
        if is_collective_failure(error):  # a hang that the process group's timeout ended
            raise DGHeadsError(collective_failure_message(error)) from error
        raise


def main(args: list[str] | None = None) -> None:
    """Console entry point; user mistakes end as one line on stderr and exit code 2.

    Subcommands: Lightning's `fit`, `validate`, `test`, `predict`; `export` (a checkpoint to a
    plain open_clip weights file); `prepare` (get and verify a benchmark); `splits` (print
    DomainBed's splits); `sweep` (a job list for a SLURM array); `collect` (result tables)."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    try:
        environment.check()
        if argv[0] in TOOLS:
            module, function = TOOLS[argv[0]][0].split(":")
            getattr(importlib.import_module(module), function)(argv[1:])
            return
        run_lightning(args)
    except Exception as error:  # a user mistake, however many layers wrapped it, is one line
        message = user_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
