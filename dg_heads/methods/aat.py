"""Attention Ablation (AAT, Lin et al. 2025) for domain generalisation.

The backbone is frozen (zero-shot CLIP, or the weights of an earlier run's checkpoint); some
heads are suppressed by editing their attention weights (`zero`, `identity`, `uniform`,
`scale`). Heads are chosen on the *source* domains only, from the source `out` splits
(training-domain validation); the held-out domain is not read before `test`.

Strategies (`search.strategy`), all run by `lightning fit`:
  scan  ablate each head alone and score it: the head-importance map; the mask keeps the
        `scan_top_k` heads whose ablation helps most (gain > 0);
  ga    a seeded genetic algorithm over binary head masks, fitness = mean source accuracy;
  bp    learn per-head ablation strengths sigmoid(logit) by back-propagation (CE on the source
        training data + `bp_sparsity` * mean strength), everything else frozen; binarised by
        threshold or top-k, and the binary mask is what validation and test use.
The mask is written to `ablation.json` ({"block": [heads]}) in the run folder and stored in
the checkpoint; `mask: path/to/ablation.json` applies a saved one without searching.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dg_heads import heads
from dg_heads.backbone import CLIPSpec
from dg_heads.errors import DGHeadsError
from dg_heads.heatmap import log_heatmap, write_matrix
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec, build_optimizer
from dg_heads.run_files import run_dir
from dg_heads.search import GASpec, Mask, MaskScorer, genetic_search, scan


@dataclass
class SearchSpec:
    strategy: Literal["scan", "ga", "bp"] = "ga"
    mode: Literal["zero", "identity", "uniform", "scale"] = "zero"
    alpha: float = 0.0  # the factor of `scale`
    max_scoring_batches: int | None = None  # per source domain; null: the whole `out` split
    scan_top_k: int = 5
    ga: GASpec = field(default_factory=GASpec)
    bp_sparsity: float = 0.05
    bp_init_strength: float = 0.05
    bp_binarize: Literal["threshold", "topk"] = "threshold"
    bp_threshold: float = 0.5
    bp_top_k: int = 5


def read_mask(source: str | dict) -> dict[int, list[int]]:
    """A mask from `{"block": [heads]}` or a JSON file holding one."""
    if isinstance(source, dict):
        return {int(k): list(v) for k, v in source.items()}
    path = Path(source)
    if not path.is_file():
        raise DGHeadsError(f"mask file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DGHeadsError(f"mask file {path} is not JSON: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DGHeadsError(f'mask file {path} must hold {{"block": [heads, ...]}}, got {str(data)[:80]}')
    return {int(k): list(v) for k, v in data.items()}


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
            raise DGHeadsError(f"search.max_scoring_batches must be >= 1 or null, got {self.search_spec.max_scoring_batches}")
        heads.convert(self.clip)
        if init_checkpoint:
            self._load_backbone(init_checkpoint)
        attns = heads.head_attentions(self.clip)
        self.shape = (len(attns), attns[0].num_heads)
        self.mask: dict[int, list[int]] = {}
        if mask:
            self.mask = heads.validate_mask(self.clip, read_mask(mask))
        self.ablation_logits = None
        if self.search_spec.strategy == "bp" and not mask:
            p = self.search_spec.bp_init_strength
            self.ablation_logits = nn.Parameter(torch.full(self.shape, math.log(p / (1 - p))))
        self.apply_mask()

    @classmethod
    def run_name(cls, init_args) -> str:
        return f"aat_{((init_args or {}).get('search') or SearchSpec()).strategy}"  # aat_scan, aat_ga, aat_bp

    def _load_backbone(self, path: str) -> None:
        """Fold an earlier run's trained tensors (fine-tune, HAP) into this frozen backbone."""
        from dg_heads.export_cli import load_module

        source = load_module(Path(path))
        self.clip.load_state_dict(heads.export(heads.convert(source.clip)).state_dict())

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

    def strengths(self) -> torch.Tensor:
        return torch.sigmoid(self.ablation_logits)

    def binarize(self) -> dict[int, list[int]]:
        s, spec = self.strengths().detach().cpu(), self.search_spec
        if spec.bp_binarize == "threshold":
            chosen = s > spec.bp_threshold
        else:
            chosen = torch.zeros_like(s, dtype=torch.bool)
            chosen.view(-1)[torch.topk(s.flatten(), min(spec.bp_top_k, s.numel())).indices] = True
        return {b: torch.nonzero(chosen[b]).flatten().tolist() for b in range(s.shape[0]) if chosen[b].any()}

    def _set_soft_ablation(self) -> None:
        for attn, strength in zip(heads.head_attentions(self.clip), self.strengths()):
            attn.set_ablation(self.search_spec.mode, strength, self.search_spec.alpha)

    # ----------------------------------------------------------- training
    def training_loss(self, images, labels, domains):
        self._set_soft_ablation()
        logits = self(images)
        ce = F.cross_entropy(logits, labels)
        sparsity = self.strengths().mean()
        logs = {"train/ce": ce, "train/strength_mean": sparsity, "train/acc": (logits.argmax(-1) == labels).float().mean()}
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
        if self.search_spec.strategy == "scan":
            gains = scan(scorer, self.shape, progress)
            self._report_matrix("search/head_importance", gains, "head_importance")
            order = torch.argsort(gains.flatten(), descending=True)[: self.search_spec.scan_top_k]
            self.mask = {}
            for index in order.tolist():
                if gains.flatten()[index] > 0:
                    self.mask.setdefault(index // self.shape[1], []).append(index % self.shape[1])
        else:
            best, history = genetic_search(scorer, self.shape, self.search_spec.ga, progress, self._log_generation)
            self.mask = {}
            for b, h in sorted(best):
                self.mask.setdefault(b, []).append(h)
            self._write_history(history)
        self.search_cost = {"cost_full_passes": scorer.cost, "mask_evaluations": scorer.evaluations,
                            "unique_masks": len(scorer.scores), "scoring_images": scorer.total_images,
                            "processes": self.trainer.world_size, "seconds": round(time.perf_counter() - started, 3)}
        self.mask = self.trainer.strategy.broadcast(self.mask)  # one mask on every rank, whatever happened
        self.apply_mask()
        self._finish_search()
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

    def _write_history(self, history: list[dict]) -> None:
        folder = run_dir(self.trainer)
        if folder is not None and self.trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            lines = ["generation,best,mean,best_heads"] + [
                f"{h['generation']},{h['best']:.6f},{h['mean']:.6f},{h['best_heads']}" for h in history]
            (folder / "ga_history.csv").write_text("\n".join(lines) + "\n")

    def _report_matrix(self, tag: str, matrix: torch.Tensor, stem: str) -> None:
        log_heatmap(self, tag, matrix)
        folder = run_dir(self.trainer)
        if folder is not None and self.trainer.is_global_zero:
            write_matrix(matrix, folder / stem)

    def _finish_search(self) -> None:
        """Write the mask (and search cost) to the run folder and save a checkpoint holding it."""
        folder = run_dir(self.trainer)
        mask_image = torch.zeros(self.shape)
        for b, hs in self.mask.items():
            mask_image[b, hs] = 1.0
        log_heatmap(self, "search/mask", mask_image)
        if folder is not None and self.trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ablation.json").write_text(json.dumps({str(b): h for b, h in sorted(self.mask.items())}, indent=1))
            if getattr(self, "search_cost", None):
                (folder / "search_cost.json").write_text(json.dumps(self.search_cost, indent=1))
        if folder is not None:
            self.trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")

    def on_train_end(self) -> None:
        if self.ablation_logits is None:
            return
        self.mask = self.binarize()
        self.apply_mask()
        self._report_matrix("search/bp_strength", self.strengths().detach().cpu(), "bp_strength")
        self._finish_search()

    # -------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dg_heads"]["ablation"] = {str(b): h for b, h in self.mask.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dg_heads", {}).get("ablation")
        if saved is not None:
            self.mask = heads.validate_mask(self.clip, saved)
            self.apply_mask()
