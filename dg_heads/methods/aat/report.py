"""What an AAT search leaves behind: its outcome, said on rank 0 and logged, and its run files.

`SearchOutcome` is what a search chose and why; `SearchReport` (a Lightning callback that
`AttentionAblation.configure_callbacks` installs, so a plain `Trainer.fit` gets it too) turns
it into run files once fit ends (the mask itself, `ablation.json`, is written by the search
step, `search.HeadSearch`, as soon as it is chosen): `search_cost.json`, `ga_history.csv`, the
`head_importance` / `bp_strength` matrices, the TensorBoard heatmaps, the checkpoint holding
the mask, and two lines on stdout saying which heads were ablated and the source-validation
accuracy with and without them (bp: the mask of the checkpoint that val/acc selected, which the
first line names). When every mask the search scored got the same score (a randomly
initialised backbone: every mask scores chance) it says so in one `warning:` line on stderr instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch
from lightning.pytorch.callbacks import Callback

from dg_heads.heads import HeadMask
from dg_heads.heatmap import log_heatmap, write_run_matrix
from dg_heads.methods.aat.scorer import MaskScorer
from dg_heads.run_files import run_dir, write_run_file


@dataclass
class SearchOutcome:
    """A search's choice with the evidence for it (scores: mean source-validation accuracy)."""

    strategy: str
    grid: tuple[int, int]
    mask: HeadMask
    unmasked: float  # no head ablated
    masked: float  # `mask` ablated
    best_ablated: float | None  # the best score of any mask that ablates a head (None: none scored)
    masks_scored: int
    all_equal: bool  # every mask scored the same: nothing to ablate in this model
    cost: dict | None = None  # search_cost.json (scan, ga)
    history: list[dict] | None = None  # ga_history.csv
    matrices: dict[str, torch.Tensor] = field(default_factory=dict)  # stem -> [blocks, heads]
    selected: str | None = None  # bp: whose strengths (the validation-selected checkpoint's; None: the final ones)
    measure: str = "source validation accuracy"  # what the scores are (retrieval: `validation RSUM`, ...)
    measure_key: str = "source_acc"  # its name in the `search/*` metrics

    @classmethod
    def from_scorer(cls, strategy: str, mask: HeadMask, scorer: MaskScorer, **extra) -> SearchOutcome:
        ablated = [score for candidate, score in scorer.scores.items() if candidate]
        return cls(strategy, scorer.grid, mask, unmasked=scorer.score(HeadMask()), masked=scorer.score(mask),
                   best_ablated=max(ablated, default=None), masks_scored=len(scorer.scores),
                   all_equal=scorer.all_equal, measure=scorer.measure, measure_key=scorer.measure_key, **extra)

    def lines(self) -> tuple[list[str], str | None]:
        """(what to print on stdout, the `warning:` line for stderr or None)."""
        name = f"AAT {self.strategy}" + (f" ({self.selected})" if self.selected else "")
        if self.all_equal:
            return [], (f"warning: {name}: all {self.masks_scored} head masks scored give the same "
                        f"{self.measure} ({self.unmasked:.4f}): this model has nothing to ablate (a randomly "
                        f"initialised backbone? start from a trained run with model.init_args.init_checkpoint); "
                        + ("nothing is ablated" if not self.mask else f"ablated anyway: {self.mask.describe()}"))
        if not self.mask:
            best = "no mask that ablates a head was scored" if self.best_ablated is None else \
                f"the best mask that ablates heads scored {self.best_ablated:.4f}"
            return [f"dg-heads: {name}: no head mask improved the {self.measure} "
                    f"({self.unmasked:.4f} with no head ablated; {best} of {self.masks_scored} masks scored): "
                    f"nothing is ablated"], None
        plural = "s" if len(self.mask) > 1 else ""
        return [f"dg-heads: {name} ablates {len(self.mask)} head{plural}: {self.mask.describe()}",
                f"dg-heads: {self.measure} {self.unmasked:.4f} without the mask, {self.masked:.4f} "
                f"with it ({self.masks_scored} masks scored)"], None

    def metrics(self) -> dict[str, float]:
        out = {f"search/{self.measure_key}_unmasked": self.unmasked, f"search/{self.measure_key}_masked": self.masked,
               "search/heads_ablated": float(len(self.mask)), "search/all_masks_equal": float(self.all_equal)}
        if self.best_ablated is not None:
            out["search/best_ablated_score"] = self.best_ablated
        return out


def history_csv(history: list[dict]) -> str:
    lines = ["generation,best,mean,best_heads"] + [
        f"{h['generation']},{h['best']:.6f},{h['mean']:.6f},{h['best_heads']}" for h in history]
    return "\n".join(lines) + "\n"


class SearchReport(Callback):
    """Reports `pl_module.search_outcome` (set by the search) when fit ends; nothing without one
    (a mask given with `mask:` is applied, not searched)."""

    def on_fit_end(self, trainer, pl_module) -> None:
        outcome: SearchOutcome | None = getattr(pl_module, "search_outcome", None)
        if outcome is None:
            return
        for stem, matrix in outcome.matrices.items():
            log_heatmap(pl_module, f"search/{stem}", matrix)
        log_heatmap(pl_module, "search/mask", outcome.mask.to_tensor(outcome.grid))
        if trainer.logger is not None:
            trainer.logger.log_metrics(outcome.metrics(), step=trainer.global_step)
        if trainer.is_global_zero:
            self._write_files(trainer, outcome)
            printed, warning = outcome.lines()
            for line in printed:
                print(line, flush=True)
            if warning:
                print(warning, file=sys.stderr, flush=True)
        folder = run_dir(trainer)
        if folder is not None:  # every rank: saving a checkpoint is collective
            trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")

    @staticmethod
    def _write_files(trainer, outcome: SearchOutcome) -> None:
        if outcome.cost is not None:
            write_run_file(trainer, "search_cost.json", json.dumps(outcome.cost, indent=1) + "\n")
        if outcome.history is not None:
            write_run_file(trainer, "ga_history.csv", history_csv(outcome.history))
        for stem, matrix in outcome.matrices.items():
            write_run_matrix(trainer, stem, matrix)
