"""A file that says a run finished: sweeps relaunch every job and skip those that have it."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dg_heads.callbacks.domain_report import DomainReport
from dg_heads.run_files import write_run_file


class DoneMarker(Callback):
    """Writes `path` (JSON: the `DomainReport` of `stage` and `global_step`) when `stage` (`fit`,
    `validate`, `test` or `predict`) finished without an error; written last, atomically, on rank 0.

    Not installed by default: the CLI adds one for `--done_marker PATH`, with `stage="test"`
    under `--test_after_fit` (the marker then follows the test of the selected checkpoint) and
    the subcommand otherwise. From Python: `Trainer(callbacks=[DoneMarker(path, "test")])`.
    Skipping a run whose marker exists is the caller's part (the CLI exits at once)."""

    def __init__(self, path: str | Path, stage: str = "fit") -> None:
        self.path = Path(path).absolute()
        self.stage = stage

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """`teardown` follows every callback's `on_<stage>_end` (the report is complete) and is not
        called when the stage raised."""
        if stage != self.stage:
            return
        report = next((c for c in trainer.callbacks if isinstance(c, DomainReport)), None)
        summary = dict(report.results.get(stage, {})) if report is not None else {}
        summary.setdefault("global_step", trainer.global_step)
        write_run_file(trainer, self.path, json.dumps(summary, indent=1, sort_keys=True) + "\n")
