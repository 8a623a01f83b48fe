"""`splits.json` in the run folder: exactly which images trained, validated and tested."""

from __future__ import annotations

import json

from lightning.pytorch.callbacks import Callback

from dg_heads.run_files import write_run_file


class SplitsManifest(Callback):
    """Writes the DataModule's `split_manifest` (DomainBed's `in`/`out` file lists per domain,
    the test domains and split) once the DataModule is set up, at the start of every stage."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        # on the class: `hasattr` on the instance would build the manifest on every process
        if datamodule is None or not hasattr(type(datamodule), "split_manifest"):
            return
        write_run_file(trainer, "splits.json", lambda: json.dumps(datamodule.split_manifest))
