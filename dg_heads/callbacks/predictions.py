"""`predictions.csv` in the run folder (`lightning predict`): every image's predicted class once."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from dg_heads.reporting import predictions_csv
from dg_heads.run_files import write_run_file


class PredictionsWriter(BasePredictionWriter):
    """Keeps (table row, class, probability) of each predicted batch, on the CPU, and writes the
    file at the end of the predict epoch. Under DDP each process predicted its share: every
    process hands its share to `all_gather_object` (a collective call, made by all of them) and
    rank 0 writes the file, in the table's order (`reporting.predictions_csv`).

    Reads what `DGModule.predict_step` returns (`row`, `pred`, `prob`) from a DataModule that can
    name its rows (`describe_rows`); other outputs are ignored."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self._rows: list[torch.Tensor] = []

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int) -> None:
        if not isinstance(prediction, dict) or "row" not in prediction:
            return
        pred, probs = prediction["pred"], prediction["prob"]
        top = probs.max(-1).values if len(pred) else torch.empty(0)
        self._rows.append(torch.stack([prediction["row"].detach().cpu().double(), pred.detach().cpu().double(),
                                       top.detach().float().cpu().double()], 1))

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        local = torch.cat(self._rows) if self._rows else torch.empty(0, 3, dtype=torch.float64)
        self._rows = []
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "describe_rows"):
            return
        shares = [local]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, local)
        path = write_run_file(trainer, self.filename, lambda: predictions_csv(shares, datamodule))
        if path is not None:
            print(f"dg-heads: predictions of {sum(len(s) for s in shares)} images written to {path}", flush=True)
