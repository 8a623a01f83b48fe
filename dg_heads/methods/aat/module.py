"""Attention Ablation (AAT, Lin et al. 2025) for domain generalisation.

The backbone is frozen (zero-shot CLIP, or the weights of an earlier run's checkpoint); some
heads are suppressed by editing their attention weights (`zero`, `identity`, `uniform`,
`scale`). Heads are chosen on the *source* domains only, from the source `out` splits
(training-domain validation); the held-out domain is not read before `test`.

Strategies (`search.strategy`), all run by `lightning fit`:
  scan  ablate each head alone and score it: the head-importance map; the mask keeps the
        `scan_top_k` heads whose ablation helps most (gain > 0);
  ga    a seeded genetic algorithm over binary head masks, fitness = mean source accuracy; its
        best mask is kept only if it scores above no ablation;
  bp    learn per-head ablation strengths sigmoid(logit) by back-propagation (CE on the source
        training data + `bp_sparsity` * mean strength), everything else frozen; binarised by
        threshold or top-k, and the binary mask is what validation and test use. The result is
        the state of the checkpoint that val/acc selected (DomainBed's training-domain
        validation, what `--test_after_fit` tests), not the last step's.
The search (package `dg_heads.methods.aat`: scorer, scan, genetic, backprop) chooses a
`HeadMask`; the `SearchReport` callback this module installs says what was chosen (the heads,
the source-validation accuracy with and without them, or a warning when every mask scored the
same) and writes it to `ablation.json` ({"block": [heads]}) in the run folder; the checkpoint
stores it too. `mask: path/to/ablation.json` applies a saved one without searching.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask
from dg_heads.heads.attention import AblationMode
from dg_heads.methods.aat import backprop
from dg_heads.methods.aat.genetic import GASpec, genetic_search
from dg_heads.methods.aat.report import SearchOutcome, SearchReport
from dg_heads.methods.aat.scan import scan, top_heads
from dg_heads.methods.aat.scorer import MaskScorer
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec, build_optimizer

Strategy = Literal["scan", "ga", "bp"]  # how heads are chosen: every head alone, a genetic search, learned strengths
STRATEGIES = get_args(Strategy)


@dataclass
class SearchSpec:
    strategy: Strategy = "ga"
    mode: AblationMode = "zero"
    alpha: float = 0.0  # the factor of `scale`
    max_scoring_batches: int | None = None  # per source domain; null: the whole `out` split
    scan_top_k: int = 5
    ga: GASpec = field(default_factory=GASpec)
    bp_sparsity: float = 0.05
    bp_init_strength: float = 0.05
    bp_binarize: backprop.Binarize = "threshold"
    bp_threshold: float = 0.5
    bp_top_k: int = 5


def leave_out_ddp_wrapper(strategy) -> None:
    """Let a training-free search (scan, GA, a given mask) run under a DDP strategy.

    DDP refuses to wrap a module with no parameter that requires a gradient ("DistributedDataParallel
    is not needed when a module doesn't have any parameter that requires a gradient"), and
    there is no gradient to synchronise. The processes still form their group (the search shares
    its scoring out over it, and validation and test reduce over it); only the wrapper is left out.
    Lightning has no public switch for this; its DDP strategy wraps the module and registers its
    communication hooks (which on CUDA assert the wrapper is there) in `configure_ddp`, so this
    strategy instance skips that step."""
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        strategy.configure_ddp = lambda: None


class AttentionAblation(DGModule):
    """Frozen CLIP with harmful heads suppressed; the heads are chosen on source domains."""

    def __init__(self, clip: CLIPSpec | None = None, optim: OptimSpec | None = None,
                 search: SearchSpec | None = None, init_checkpoint: str | None = None,
                 mask: str | None = None) -> None:
        super().__init__(clip=clip, optim=optim)
        self.search_spec = search or SearchSpec()
        if self.search_spec.strategy == "ga":
            self.search_spec.ga.check()
        if self.search_spec.max_scoring_batches is not None and self.search_spec.max_scoring_batches < 1:
            raise DGHeadsError(
                f"search.max_scoring_batches must be >= 1 or null, got {self.search_spec.max_scoring_batches}")
        heads.convert(self.clip)
        if init_checkpoint:
            self._load_backbone(init_checkpoint)
        self.grid = heads.head_grid(self.clip)
        self.mask = HeadMask()
        if mask:
            given = HeadMask.of(mask) if isinstance(mask, Mapping) else HeadMask.read(mask)
            self.mask = heads.validate_mask(self.clip, given)
        self.search_outcome: SearchOutcome | None = None  # set by the search, reported by SearchReport
        self.ablation_logits = None
        if self.search_spec.strategy == "bp" and not mask:
            self.ablation_logits = backprop.initial_logits(self.grid, self.search_spec.bp_init_strength)
        self.apply_mask()

    @classmethod
    def run_name(cls, init_args) -> str:
        return f"aat_{((init_args or {}).get('search') or SearchSpec()).strategy}"  # aat_scan, aat_ga, aat_bp

    def _load_backbone(self, path: str) -> None:
        """Fold an earlier run's trained tensors (fine-tune, HAP) into this frozen backbone."""
        from dg_heads.export_cli import load_module

        source = load_module(Path(path))
        self.clip.load_state_dict(heads.export(heads.convert(source.clip)).state_dict())

    def default_callbacks(self):
        """The search's own files and its summary (`report.SearchReport`) beside the common ones."""
        return super().default_callbacks() + [SearchReport()]

    def configure_trainable(self) -> None:
        super().configure_trainable()
        if self.ablation_logits is not None:
            self.ablation_logits.requires_grad_(True)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.ablation_logits is None:
            leave_out_ddp_wrapper(self.trainer.strategy)

    # ------------------------------------------------------------- masks
    def apply_mask(self) -> None:
        heads.ablate(self.clip, self.mask, self.search_spec.mode, self.search_spec.alpha)

    def binarize(self) -> HeadMask:
        spec = self.search_spec
        return backprop.binarize(backprop.strengths(self.ablation_logits), spec.bp_binarize, spec.bp_threshold,
                                 spec.bp_top_k)

    # ----------------------------------------------------------- training
    def training_loss(self, images, labels, domains):
        backprop.apply_soft(self.clip, self.ablation_logits, self.search_spec.mode, self.search_spec.alpha)
        logits = self(images)
        ce = F.cross_entropy(logits, labels)
        sparsity = backprop.strengths(self.ablation_logits).mean()
        accuracy = (logits.argmax(-1) == labels).float().mean()
        logs = {"train/ce": ce, "train/strength_mean": sparsity, "train/acc": accuracy}
        return ce + self.search_spec.bp_sparsity * sparsity, logs

    def on_validation_epoch_start(self) -> None:
        if self.ablation_logits is not None:  # select and validate what test will use
            self.mask = self.binarize()
            self.apply_mask()

    def on_test_start(self) -> None:
        self.on_validation_epoch_start()
        self.apply_mask()

    def configure_optimizers(self):
        if self.ablation_logits is None:
            return None  # scan / ga: training-free
        return build_optimizer(self.optim_spec, [{"params": [self.ablation_logits], "weight_decay": 0.0}],
                               int(self.trainer.estimated_stepping_batches))

    # ------------------------------------------------------------- search
    def on_fit_start(self) -> None:
        if self.ablation_logits is not None or self.search_spec.strategy == "bp":
            return
        if self.mask:
            self.trainer.should_stop = True  # a given mask: nothing to search
            return
        started = time.perf_counter()
        scorer = self._scorer()
        progress = self.trainer.progress_bar_callback is not None and self.trainer.is_global_zero
        extra: dict[str, Any] = {}
        if self.search_spec.strategy == "scan":
            gains = scan(scorer, progress)
            extra["matrices"] = {"head_importance": gains}
            chosen = top_heads(gains, self.search_spec.scan_top_k)
        else:
            chosen, extra["history"] = genetic_search(scorer, self.search_spec.ga, progress, self._log_generation)
            if scorer.score(chosen) <= scorer.score(HeadMask()):
                chosen = HeadMask()  # ablate only what improves the source validation accuracy
        chosen = self.trainer.strategy.broadcast(chosen)  # one mask on every rank, whatever happened
        outcome = SearchOutcome.from_scorer(self.search_spec.strategy, chosen, scorer, **extra)
        outcome.cost = {"cost_full_passes": scorer.cost, "mask_evaluations": scorer.evaluations,
                        "unique_masks": len(scorer.scores), "scoring_images": scorer.total_images,
                        "processes": self.trainer.world_size, "seconds": round(time.perf_counter() - started, 3)}
        self.mask, self.search_outcome = chosen, outcome
        self.apply_mask()
        self.trainer.should_stop = True

    def _scorer(self) -> MaskScorer:
        """Cache the source `out` splits' block inputs; the held-out domains are never read.

        Under DDP each process caches its share of the scoring images and every mask's counts
        are summed over all processes, so all of them score the same masks the same way (and
        pick the same heads) as one process would, each doing a share of the work. Caching and
        scoring both run in the trainer's precision context (bf16 autocast under bf16-mixed)."""
        datamodule, trainer = self.trainer.datamodule, self.trainer
        limit = self.search_spec.max_scoring_batches
        loaders = datamodule.source_val_dataloaders(None if limit is None else limit * datamodule.eval_batch_size)
        strategy = trainer.strategy
        scorer = MaskScorer(
            self.clip, lambda f: self.logits(F.normalize(f, dim=-1)), self.search_spec.mode, self.search_spec.alpha,
            num_domains=len(loaders), autocast=trainer.precision_plugin.forward_context,
            reduce=(lambda t: strategy.reduce(t, reduce_op="sum")) if trainer.world_size > 1 else (lambda t: t),
        )
        device = self.classifier.device  # the weights' device (on_fit_start: after the strategy moved them)
        for domain_index, loader in enumerate(loaders):
            for images, labels in loader:
                # uint8 from the loaders: normalised here (the scorer runs the blocks, not `image_features`)
                scorer.add(self.prepare_images(images.to(device)), labels.to(device), domain_index)
        return scorer

    def _log_generation(self, generation: int, best: float, mean: float) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"search/ga_best_fitness": best, "search/ga_mean_fitness": mean}, step=generation)

    def on_train_end(self) -> None:
        """BP: take the strengths of the checkpoint that training-domain validation selected (what
        `--test_after_fit` tests), binarise them, and score the binary mask against no mask on the
        source `out` splits (what the report says)."""
        if self.ablation_logits is None:
            return
        selected = self._load_selected_strengths()
        self.mask = self.binarize()
        with torch.no_grad():
            outcome = SearchOutcome.from_scorer("bp", self.mask, self._scorer(), selected=selected)
        outcome.matrices = {"bp_strength": backprop.strengths(self.ablation_logits).detach().cpu()}
        self.search_outcome = outcome
        self.apply_mask()

    def _load_selected_strengths(self) -> str | None:
        """BP's result is the val/acc-selected state, as for every other method (DomainBed's
        training-domain validation selects among the validations), not the last step's: copy the
        ablation logits of `trainer.checkpoint_callback`'s best checkpoint into the module, so the
        report, `ablation.json`, `bp_strength`, the module in memory and `last.ckpt` all hold the
        mask that `evaluate_selected_checkpoint` tests. It reads the file with the loader that
        test uses (`strategy.load_checkpoint`: torch's weights-only loader); every DDP process
        does the same (Lightning's `ModelCheckpoint` agrees on `best_model_path` over them, and
        rank 0 wrote the file before a barrier). Returns what the report says it is, or None
        when no checkpoint was selected (`enable_checkpointing: false`): the final strengths."""
        callback = self.trainer.checkpoint_callback
        path = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
        if path is None or not path.is_file():
            return None
        checkpoint = self.trainer.strategy.load_checkpoint(path)
        saved = checkpoint["state_dict"].get("ablation_logits")
        if saved is None:
            raise DGHeadsError(f"{path} (the val/acc-selected checkpoint) holds no ablation_logits: "
                               "not a checkpoint of this bp run")
        with torch.no_grad():
            self.ablation_logits.copy_(saved)  # in place (the optimiser's parameter), to its device and dtype
        return (f"the checkpoint selected by {callback.monitor or 'its checkpoint callback'}: "
                f"epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')}")

    # -------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dg_heads"]["ablation"] = self.mask.to_json_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dg_heads", {}).get("ablation")
        if saved is not None:  # `{"block": [heads]}`, as every version wrote it
            self.mask = heads.validate_mask(self.clip, HeadMask.from_dict(saved, source="the checkpoint's ablation"))
            self.apply_mask()
