"""`HeadSearch`: AAT's search as a named step of `lightning fit`, a Lightning callback.

`AttentionAblation.default_callbacks` lists it (so the CLI and a plain `Trainer.fit` run it).
What it does, in order:

  fit start   a mask given with `mask:`: nothing to search, fit ends at once. Otherwise the
              scorer's cache is planned (an impossible one is one `error:` line before any work);
              scan / GA: the search scores masks on the source `out` splits (retrieval: the
              validation datasets), writes the chosen mask to `ablation.json` in the run folder,
              hands it to the module (`AttentionAblation.use_mask`, which applies it) and ends fit
              (there is nothing to train). bp: nothing yet, the module trains its strengths.
  train end   bp: the strengths of the checkpoint that validation selected are binarised, scored
              against no mask, written to `ablation.json` and handed to the module.

`ablation.json` ({"block": [heads]}) is the file `mask:` reads: a later run applies it without
searching. What the search found beyond the mask (the lines it says, `search_cost.json`,
`ga_history.csv`, the heatmaps, `last.ckpt`) is `report.SearchReport`'s, when fit ends.

Why a callback and not a subcommand of its own: the search needs what `fit` sets up (the
datamodule's source splits, the strategy's processes for DDP, the precision context, the run
folder and its logger, the requeue handler, the leakage check of `init_checkpoint`), and bp's
search *is* a fit; a callback keeps one command for all three strategies.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback

from dg_heads.heads import HeadMask
from dg_heads.methods.aat.genetic import genetic_search
from dg_heads.methods.aat.report import SearchOutcome
from dg_heads.methods.aat.scan import scan, top_heads
from dg_heads.run_files import write_run_file

if TYPE_CHECKING:
    from dg_heads.methods.aat.module import AttentionAblation

MASK_FILE = "ablation.json"  # what the search writes and `mask:` reads


class HeadSearch(Callback):
    """Choose AAT's head mask (scan, GA, or bp's learned strengths), write it to `ablation.json`,
    and give it to the module."""

    def on_fit_start(self, trainer, pl_module: AttentionAblation) -> None:
        if pl_module.mask_given:
            trainer.should_stop = True  # a given mask (any strategy, bp too): nothing to search or train
            return
        pl_module.cache_plan = pl_module.plan_scoring_cache()  # before any work: an impossible cache is an error now
        if pl_module.ablation_logits is not None:
            return  # bp: the module trains its strengths; the mask is chosen when training ends
        spec, started = pl_module.search_spec, time.perf_counter()
        scorer = pl_module.build_scorer()
        progress = trainer.progress_bar_callback is not None and trainer.is_global_zero
        extra: dict[str, Any] = {}
        if spec.strategy == "scan":
            gains = scan(scorer, progress)
            extra["matrices"] = {"head_importance": gains}
            chosen = top_heads(gains, spec.scan_top_k)
        else:
            chosen, extra["history"] = genetic_search(scorer, spec.ga, progress, pl_module.log_generation)
            if scorer.score(chosen) <= scorer.score(HeadMask()):
                chosen = HeadMask()  # ablate only what improves the source validation accuracy
        chosen = trainer.strategy.broadcast(chosen)  # one mask on every rank, whatever happened
        outcome = SearchOutcome.from_scorer(spec.strategy, chosen, scorer, **extra)
        plan = pl_module.cache_plan
        outcome.cost = {"cost_full_passes": scorer.cost, "mask_evaluations": scorer.evaluations,
                        "unique_masks": len(scorer.scores), "scoring_images": scorer.total_images,
                        "cache_bytes_per_process": plan.bytes, "cache_blocks_kept": list(plan.levels),
                        "processes": trainer.world_size, "seconds": round(time.perf_counter() - started, 3)}
        self._chose(trainer, pl_module, outcome)
        trainer.should_stop = True  # scan / GA train nothing

    def on_train_end(self, trainer, pl_module: AttentionAblation) -> None:
        if pl_module.ablation_logits is None or pl_module.mask_given:
            return
        self._chose(trainer, pl_module, pl_module.bp_outcome())

    @staticmethod
    def _chose(trainer, pl_module: AttentionAblation, outcome: SearchOutcome) -> None:
        write_run_file(trainer, MASK_FILE, outcome.mask.to_json())
        pl_module.use_mask(outcome.mask, outcome)
