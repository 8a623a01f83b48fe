"""Attention Ablation (AAT, Lin et al. 2025) for domain generalisation.

The backbone is frozen (zero-shot CLIP, or the weights of an earlier run's checkpoint); some
heads are suppressed by editing their attention weights (`zero`, `identity`, `uniform`,
`scale`). Heads are chosen on the *source* domains only, from the source `out` splits
(training-domain validation); the held-out domain is not read before `test`.

Strategies (`search.strategy`), all run by `lightning fit` through the `HeadSearch` callback
(`search.py`, one named step: it writes the mask to `ablation.json` and gives it to this module):
  scan  ablate each head alone and score it: the head-importance map; the mask keeps the
        `scan_top_k` heads whose ablation helps most (gain > 0);
  ga    a seeded genetic algorithm over binary head masks, fitness = mean source accuracy; its
        best mask is kept only if it scores above no ablation;
  bp    learn per-head ablation strengths sigmoid(logit) by back-propagation (CE on the source
        training data + `bp_sparsity` * mean strength), everything else frozen; binarised by
        threshold or top-k, and the binary mask is what validation and test use. The result is
        the state of the checkpoint that val/acc selected (DomainBed's training-domain
        validation, what `--test_after_fit` tests; retrieval: val/rsum), not the last step's.
Retrieval data (`dg_heads.tasks.retrieval`): scan and GA score masks by validation recall (the
mean over the validation datasets of `search.metric`: `rsum` or one recall, e.g. `i2t_r1`) on
the first `max_scoring_batches` x `eval_batch_size` images of each validation dataset, the
captions embedded once (only the image tower's heads are ablated; the text tower's are a
follow-up); bp learns its strengths with CLIP's symmetric contrastive loss on the training pairs
(+ the sparsity term), the checkpoint selected by `val/rsum`.

The search (package `dg_heads.methods.aat`: scorer, scan, genetic, backprop; run by the
`HeadSearch` callback) chooses a `HeadMask` and writes it to `ablation.json` ({"block": [heads]})
in the run folder; the `SearchReport` callback says what was chosen (the heads, the
source-validation accuracy with and without them, or a warning when every mask scored the same)
and writes the search's other files; the checkpoint stores the mask too.
`mask: path/to/ablation.json` applies a saved one without searching (with any strategy, bp
included: nothing is trained then, and fit ends at once).

Memory: the scorer's cache of block inputs is sized before any scoring image is read and held
within `search.cache_budget_gb` per process (`scorer.plan_cache`; beyond it some blocks are
recomputed, with the same scores); when not even block 0's inputs fit, one `error:` line names
the sizes and the keys to change before any work. A checkpoint stands on its own: the backbone
tensors that `init_checkpoint` changed are stored in it, so loading or exporting it never reads
that file again.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, image_size_of
from dg_heads.compat import leave_out_ddp_wrapper
from dg_heads.errors import DGHeadsError, keyed
from dg_heads.heads import HeadMask
from dg_heads.heads.attention import AblationMode
from dg_heads.methods.aat import backprop
from dg_heads.methods.aat.genetic import GASpec
from dg_heads.methods.aat.report import SearchOutcome, SearchReport
from dg_heads.methods.aat.scorer import GB, CachePlan, MaskScorer, RetrievalMaskScorer, plan_cache
from dg_heads.methods.aat.search import HeadSearch
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec, build_optimizer
from dg_heads.tasks.metrics import RETRIEVAL_METRICS

Strategy = Literal["scan", "ga", "bp"]  # how heads are chosen: every head alone, a genetic search, learned strengths
STRATEGIES = get_args(Strategy)


@dataclass
class SearchSpec:
    strategy: Strategy = "ga"
    mode: AblationMode = "zero"
    alpha: float = 0.0  # the factor of `scale`
    max_scoring_batches: int | None = 4  # per source domain; null: the whole `out` split
    cache_budget_gb: float = 4.0  # the scorer's block-input cache, per process (scorer.plan_cache)
    scan_top_k: int = 5
    ga: GASpec = field(default_factory=GASpec)
    bp_sparsity: float = 0.05
    bp_init_strength: float = 0.05
    bp_binarize: backprop.Binarize = "threshold"
    bp_threshold: float = 0.5
    bp_top_k: int = 5
    metric: str = "rsum"  # retrieval data: what scan and GA maximise (rsum, i2t_r1, ..., t2i_r10)


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
        if self.search_spec.metric not in RETRIEVAL_METRICS:
            raise DGHeadsError(
                f"search.metric must be one of {list(RETRIEVAL_METRICS)}, got {self.search_spec.metric!r}")
        if not self.search_spec.cache_budget_gb > 0:
            raise DGHeadsError(f"search.cache_budget_gb must be > 0, got {self.search_spec.cache_budget_gb}")
        heads.convert(self.clip)
        self.init_checkpoint = str(Path(init_checkpoint).resolve()) if init_checkpoint else None
        self.init_keys: list[str] = []  # the backbone tensors `init_checkpoint` changed (stored in checkpoints)
        if init_checkpoint:
            with keyed("init_checkpoint"):
                self.init_keys = self._load_backbone(init_checkpoint)
        self.grid = heads.head_grid(self.clip)
        self.mask = HeadMask()
        if mask:
            given = HeadMask.of(mask) if isinstance(mask, Mapping) else HeadMask.read(mask)
            self.mask = heads.validate_mask(self.clip, given)
        self.mask_given = bool(mask)  # applied as is: nothing to search or train
        self.search_outcome: SearchOutcome | None = None  # set by the search, reported by SearchReport
        self.cache_plan: CachePlan | None = None  # the scorer's cache, planned when fit starts
        self.ablation_logits = None
        if self.search_spec.strategy == "bp" and not mask:
            self.ablation_logits = backprop.initial_logits(self.grid, self.search_spec.bp_init_strength)
        self.apply_mask()

    @classmethod
    def run_name(cls, init_args) -> str:
        return f"aat_{((init_args or {}).get('search') or SearchSpec()).strategy}"  # aat_scan, aat_ga, aat_bp

    def _load_backbone(self, path: str) -> list[str]:
        """Fold an earlier run's trained tensors (fine-tune, HAP) into this frozen backbone; returns
        the names of the tensors that changed (what a checkpoint of this run must hold itself)."""
        from dg_heads.export_cli import load_module

        source = load_module(Path(path))
        before = {k: v.clone() for k, v in self.clip.state_dict().items()}
        self.clip.load_state_dict(heads.export(heads.convert(source.clip)).state_dict())
        return [k for k, v in self.clip.state_dict().items() if k not in before or not torch.equal(before[k], v)]

    def default_callbacks(self):
        """The search, a step of its own (`search.HeadSearch`: it writes `ablation.json`), and its
        summary and other files (`report.SearchReport`), beside the common ones."""
        return super().default_callbacks() + [HeadSearch(), SearchReport()]

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

    def retrieval_loss(self, images, captions):
        """bp on retrieval data: CLIP's symmetric contrastive loss on the training pairs under the
        soft ablation, + `bp_sparsity` x the mean strength."""
        backprop.apply_soft(self.clip, self.ablation_logits, self.search_spec.mode, self.search_spec.alpha)
        loss, logs = super().retrieval_loss(images, captions)
        sparsity = backprop.strengths(self.ablation_logits).mean()
        logs["train/strength_mean"] = sparsity
        return loss + self.search_spec.bp_sparsity * sparsity, logs

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
    # The search itself is a step of its own, `search.HeadSearch` (a callback that
    # `default_callbacks` lists); the module provides what it scores with and applies its choice.
    def use_mask(self, mask: HeadMask, outcome: SearchOutcome | None = None) -> None:
        """Apply the mask the search chose (`outcome`: why, for `SearchReport`)."""
        self.mask, self.search_outcome = mask, outcome
        self.apply_mask()

    @property
    def retrieval(self) -> bool:
        return self.task is not None and self.task.name == "retrieval"

    def build_scorer(self) -> MaskScorer:
        """Cache the source `out` splits' block inputs; the held-out domains are never read
        (retrieval: the validation datasets' images, and their captions' embeddings once).

        Under DDP each process caches its share of the scoring images and every mask's counts
        are summed over all processes, so all of them score the same masks the same way (and
        pick the same heads) as one process would, each doing a share of the work. Caching and
        scoring both run in the trainer's precision context (bf16 autocast under bf16-mixed)."""
        trainer = self.trainer
        loaders = self._scoring_loaders()
        plan = self.cache_plan or self.plan_scoring_cache(loaders)
        strategy = trainer.strategy
        device = self.pixel_mean.device  # the weights' device (on_fit_start: after the strategy moved them)
        if self.retrieval:
            return self._retrieval_scorer(loaders, plan, device)
        scorer = MaskScorer(
            self.clip, lambda f: self.logits(F.normalize(f, dim=-1)), self.search_spec.mode, self.search_spec.alpha,
            num_domains=len(loaders), autocast=trainer.precision_plugin.forward_context,
            reduce=(lambda t: strategy.reduce(t, reduce_op="sum")) if trainer.world_size > 1 else (lambda t: t),
            levels=plan.levels,
        )
        for domain_index, loader in enumerate(loaders):
            for images, labels in loader:
                # uint8 from the loaders: normalised here (the scorer runs the blocks, not `image_features`)
                scorer.add(self.prepare_images(images.to(device)), labels.to(device), domain_index)
        return scorer

    def _retrieval_scorer(self, loaders: list, plan: CachePlan, device) -> RetrievalMaskScorer:
        from dg_heads.tasks.retrieval import caption_layout, gather_cat

        trainer = self.trainer
        scorer = RetrievalMaskScorer(
            self.clip, lambda f: F.normalize(f.float(), dim=-1), self.search_spec.mode, self.search_spec.alpha,
            num_domains=len(loaders), autocast=trainer.precision_plugin.forward_context, levels=plan.levels,
            metric=self.search_spec.metric, gather=gather_cat, dim=self.embed_dim())
        for domain_index, loader in enumerate(loaders):
            for batch in loader:
                index = batch["image_index"].to(device)
                scorer.add(self.prepare_images(batch["images"].to(device)), index, domain_index)
                texts, text_image, text_pos = caption_layout(index, batch["captions"])
                with torch.no_grad(), trainer.precision_plugin.forward_context():
                    scorer.add_texts(domain_index, self.text_features(texts), text_image, text_pos)
        return scorer

    def _scoring_loaders(self) -> list:
        """Classification: the source `out` splits; retrieval: the validation datasets. The first
        `max_scoring_batches` x `eval_batch_size` images of each, the same whatever the processes."""
        datamodule, limit = self.trainer.datamodule, self.search_spec.max_scoring_batches
        max_images = None if limit is None else limit * datamodule.eval_batch_size
        if not self.retrieval:
            return datamodule.source_val_dataloaders(max_images)
        return [_first_images(loader, max_images, self.trainer) for loader in datamodule.val_dataloader()]

    def plan_scoring_cache(self, loaders: list | None = None) -> CachePlan:
        """The scorer's cache, sized before any scoring image is read: this process's scoring images
        x (tokens x width of the dtype the blocks run in) per kept block, within
        `search.cache_budget_gb` and 80% of the memory free on the device (the host: shared by this
        node's processes). Every process takes the same plan (the largest share of images, the
        smallest limit). When not even block 0's inputs fit: one `error:` line on rank 0 (the other
        processes end quietly with the same exit code), before any work."""
        trainer, spec = self.trainer, self.search_spec
        loaders = self._scoring_loaders() if loaders is None else loaders
        images = sum(len(loader.sampler) if loader.sampler is not None else len(loader.dataset) for loader in loaders)
        device = self.pixel_mean.device
        size = image_size_of(self.clip)
        with torch.no_grad(), trainer.precision_plugin.forward_context():  # one blank image: shape and dtype
            probe = heads.run_blocks(self.clip, heads.embed(self.clip, torch.zeros(1, 3, size, size, device=device)),
                                     0, 1)
        per_image = probe[0].numel() * probe.element_size()
        budget = spec.cache_budget_gb * GB
        free = _free_bytes(device, trainer.num_devices)
        limit = budget if free is None else min(budget, 0.8 * free)
        wanted = torch.tensor([images * per_image, -limit, images], dtype=torch.float64, device=device)
        if trainer.world_size > 1:  # the same decision on every process
            wanted = trainer.strategy.reduce(wanted, reduce_op="max")
        level_bytes, limit, images = int(wanted[0]), -float(wanted[1]), int(wanted[2])
        blocks = self.grid[0]
        plan = plan_cache(blocks, level_bytes, limit)
        if plan is not None:
            return plan
        capped = "" if free is None or limit >= budget else \
            f", capped at 80% of the {free / GB:.3g} GB free on {device}"
        message = (
            f"the AAT search's cache needs at least {level_bytes / GB:.3g} GB a process (block 0's input for "
            f"{images} scoring images of {probe.shape[1]} tokens x {probe.shape[2]} {str(probe.dtype)[6:]}; every "
            f"block's: {(blocks + 1) * level_bytes / GB:.3g} GB) but may use {limit / GB:.3g} GB "
            f"(cache_budget_gb: {spec.cache_budget_gb}{capped}): raise model.init_args.search.cache_budget_gb, "
            f"or lower model.init_args.search.max_scoring_batches ({spec.max_scoring_batches}) or "
            f"data.init_args.eval_batch_size ({trainer.datamodule.eval_batch_size}), or use more processes")
        if trainer.global_rank > 0:
            sys.exit(2)  # rank 0 says why, once
        raise DGHeadsError(message, "model.init_args.search.cache_budget_gb")

    def log_generation(self, generation: int, best: float, mean: float) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"search/ga_best_fitness": best, "search/ga_mean_fitness": mean}, step=generation)

    def bp_outcome(self) -> SearchOutcome:
        """BP's choice when training ends: the strengths of the checkpoint that training-domain
        validation selected (what `--test_after_fit` tests), binarised, and the binary mask scored
        against no mask on the source `out` splits (what the report says)."""
        selected = self._load_selected_strengths()
        mask = self.binarize()
        with torch.no_grad():
            outcome = SearchOutcome.from_scorer("bp", mask, self.build_scorer(), selected=selected)
        outcome.matrices = {"bp_strength": backprop.strengths(self.ablation_logits).detach().cpu()}
        return outcome

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
            raise DGHeadsError(f"{path} (the {callback.monitor}-selected checkpoint) holds no ablation_logits: "
                               "not a checkpoint of this bp run")
        with torch.no_grad():
            self.ablation_logits.copy_(saved)  # in place (the optimiser's parameter), to its device and dtype
        return (f"the checkpoint selected by {callback.monitor or 'its checkpoint callback'}: "
                f"epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')}")

    # -------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The mask, and the backbone tensors `init_checkpoint` changed: the checkpoint stands on its
        own (its hparams say `init_checkpoint: null`, so loading it never reads that file again)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["dg_heads"]["ablation"] = self.mask.to_json_dict()
        if self.init_keys:
            state = self.clip.state_dict()
            checkpoint["dg_heads"]["init_checkpoint"] = self.init_checkpoint  # where they came from (a record)
            checkpoint["dg_heads"]["init_weights"] = {k: state[k].detach().cpu() for k in self.init_keys}
            if "init_checkpoint" in checkpoint.get("hyper_parameters", {}):
                checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "init_checkpoint": None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        weights = checkpoint.get("dg_heads", {}).get("init_weights")
        if weights:  # before the frozen-backbone check: these are part of it
            unexpected = self.clip.load_state_dict(weights, strict=False).unexpected_keys
            if unexpected:
                raise DGHeadsError(f"the checkpoint's init_weights name tensors this backbone lacks: {unexpected[:3]}")
            # kept in this module's own checkpoints too (a resumed bp run's, built with init_checkpoint: null)
            self.init_keys = sorted(set(self.init_keys) | set(weights))
            self.init_checkpoint = self.init_checkpoint or checkpoint["dg_heads"].get("init_checkpoint")
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dg_heads", {}).get("ablation")
        if saved is not None:  # `{"block": [heads]}`, as every version wrote it
            self.mask = heads.validate_mask(self.clip, HeadMask.from_dict(saved, source="the checkpoint's ablation"))
            self.apply_mask()


def _first_images(loader, max_images: int | None, trainer):
    """`loader` over its split's first `max_images` images (all: None), shared out over the
    processes without padding as the DataModule's evaluation loaders are: process r takes images
    r, r + P, r + 2P, ... (the split of Lightning's `UnrepeatedDistributedSampler`, which refuses a
    process with no image; here a process may have none when there are fewer images than processes)."""
    from torch.utils.data import DataLoader, Subset

    dataset = loader.dataset
    if max_images is None or len(dataset) <= max_images:
        return loader
    dataset = Subset(dataset, range(trainer.global_rank, max_images, trainer.world_size))
    return DataLoader(dataset, batch_size=loader.batch_size, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)


def _free_bytes(device: torch.device, processes: int) -> float | None:
    """Memory free for this process's cache on `device`: CUDA's free memory (and what torch holds
    unused), or the host's available memory shared by this node's `processes`; None: unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024 / max(1, processes)
        except OSError:
            return None
    return None
