"""`MaskScorer`: the source accuracy of a frozen model under a head mask, with caches.

It caches block inputs for the scoring data (one full pass) and evaluates a mask from the input
of its first ablated block onwards, and it remembers the score of every mask it has seen. `cost`
counts block forwards in units of one full scoring pass (every block over every scoring image),
so savings are measurable. It runs the tower through the head engine's staged forward
(`heads.embed` -> `heads.run_blocks` -> `heads.features`) only.

The cache is sized before any image is read (`cache_bytes`, `plan_cache`) and held within a
budget (`search.cache_budget_gb`): every block's input when that fits, else the inputs of a few
evenly spaced blocks (`levels`, always block 0's), a mask then running from the nearest kept
block at or before its first ablated one. The blocks in between carry no ablation, so they
recompute exactly the tensors a full cache would hold: the scores, and so the search, do not
depend on the budget. Recomputing was chosen over spilling to host memory: a mask needs one
block's input per image, and with 4 to 8 processes a node the host memory (pinned memory above
all) is shared by all of them, while a recompute costs at most the blocks between two kept ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from dg_heads import heads
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask

GB = 10**9  # `search.cache_budget_gb` counts decimal gigabytes


def vision_dims(model_cfg: Mapping | str) -> tuple[int, int, int]:
    """(tokens, width, blocks) of an open_clip ViT image tower, from its model config: the dict
    `open_clip.get_model_config(name)` returns (or its `vision_cfg`), or a model name. Tokens:
    the patches of `image_size / patch_size` plus the class token. No model is built."""
    if isinstance(model_cfg, str):
        import open_clip

        import dg_heads.backbone  # noqa: F401  (registers dg-heads' own model configs, e.g. dg-tiny-vit)

        name, model_cfg = model_cfg, open_clip.get_model_config(model_cfg)
        if model_cfg is None:
            raise DGHeadsError(f"open_clip has no model config named {name!r}")
    vision = model_cfg.get("vision_cfg", model_cfg)
    size, patch = vision.get("image_size", 224), vision.get("patch_size", 16)
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return (size[0] // patch[0]) * (size[1] // patch[1]) + 1, int(vision["width"]), int(vision["layers"])


def cache_dtype(precision: str | int) -> torch.dtype:
    """The dtype of the cached block inputs under a Lightning `trainer.precision` (autocast's)."""
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return torch.float64 if text.startswith("64") else torch.float32


def cache_bytes(model_cfg: Mapping | str, images: int, dtype: torch.dtype | str = torch.bfloat16,
                levels: int | None = None) -> int:
    """Bytes of the scorer's cache of block inputs for `images` scoring images (a process's share
    under DDP) of the image tower `model_cfg` (see `vision_dims`): `levels` blocks' inputs
    (default: every block's, and the last block's output: layers + 1) of `tokens x width`
    elements of `dtype` each (a torch dtype or its name: `"bfloat16"`; `cache_dtype(precision)`
    for a trainer's). E.g. `cache_bytes("ViT-B-16", 2560)`: 4 batches of 128 images of 5 source
    domains, bf16: 10.07e9 bytes."""
    tokens, width, blocks = vision_dims(model_cfg)
    kept = blocks + 1 if levels is None else levels
    return int(images) * kept * tokens * width * _itemsize(dtype)


def _itemsize(dtype: torch.dtype | str) -> int:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class CachePlan:
    """Which blocks' inputs a scorer keeps, and the bytes that takes (this process's images)."""

    levels: tuple[int, ...]  # blocks whose input is cached (block 0 always; `blocks`: the last block's output)
    level_bytes: int  # one block's input for every scoring image of this process
    blocks: int

    @property
    def bytes(self) -> int:
        return len(self.levels) * self.level_bytes

    @property
    def full_bytes(self) -> int:
        """What caching every block's input would take."""
        return (self.blocks + 1) * self.level_bytes

    @property
    def complete(self) -> bool:
        return len(self.levels) == self.blocks + 1


def plan_cache(blocks: int, level_bytes: int, budget_bytes: float) -> CachePlan | None:
    """The most block inputs that fit in `budget_bytes`: all `blocks + 1` levels, else `n` evenly
    spaced blocks from block 0 (a mask then recomputes at most the blocks up to the next kept one);
    None when not even block 0's inputs fit."""
    fits = blocks + 1 if level_bytes <= 0 else min(blocks + 1, int(budget_bytes // level_bytes))
    if fits < 1:
        return None
    levels = range(blocks + 1) if fits == blocks + 1 else sorted({i * blocks // fits for i in range(fits)})
    return CachePlan(tuple(levels), level_bytes, blocks)


@dataclass
class ScoringBatch:
    domain: int
    labels: torch.Tensor
    block_inputs: dict[int, torch.Tensor]  # the input of every kept block (key L: the output of the last)


def _no_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class MaskScorer:
    """Mean per-domain accuracy of the frozen model under a head mask, with caches.

    Precision and processes: `autocast` is the context every forward runs in (the trainer's
    precision, e.g. bf16 autocast), for filling the caches and for scoring alike, so the
    cached block inputs and the weights meet in the same dtype. `levels`: the blocks whose
    input is cached (a `CachePlan`'s; None: every block's); the scores do not depend on it.
    Under DDP every process caches its own share of the scoring images and `reduce` sums each
    mask's per-domain counts over all of them, so every process gets the score of the whole set,
    the same on all: the same masks are then chosen everywhere, as with one process, in a share
    of the time."""

    model: torch.nn.Module
    classify: Callable[[torch.Tensor], torch.Tensor]  # image features -> logits
    mode: str = "zero"
    alpha: float = 0.0
    num_domains: int = 1
    autocast: Callable[[], AbstractContextManager] = nullcontext
    reduce: Callable[[torch.Tensor], torch.Tensor] = _no_reduce  # sum over processes
    levels: tuple[int, ...] | None = None  # blocks whose input is cached; None: every block's
    batches: list[ScoringBatch] = field(default_factory=list)
    scores: dict[HeadMask, float] = field(default_factory=dict)
    block_forwards: int = 0  # images x blocks actually run (the cost, this process's share)
    evaluations: int = 0  # masks asked for, cached or not
    total_images: int = 0  # scoring images over every process, known after the first score

    @property
    def grid(self) -> tuple[int, int]:
        """(blocks, heads per block): the shape of every mask this scorer can score."""
        return heads.head_grid(self.model)

    @property
    def num_blocks(self) -> int:
        return self.grid[0]

    @property
    def num_images(self) -> int:
        """Scoring images held by this process."""
        return sum(len(b.labels) for b in self.batches)

    @property
    def cost(self) -> float:
        """Block forwards so far, in units of one full pass over the scoring data."""
        return self.block_forwards / max(1, self.num_blocks * self.num_images)

    @torch.no_grad()
    def add(self, images: torch.Tensor, labels: torch.Tensor, domain: int) -> None:
        """Cache the kept blocks' inputs for one batch (with no head ablated)."""
        if not 0 <= domain < self.num_domains:
            raise ValueError(f"domain index {domain} is outside [0, {self.num_domains})")
        heads.clear_ablation(self.model)
        num_blocks = self.num_blocks
        keep = set(range(num_blocks + 1) if self.levels is None else self.levels)
        if 0 not in keep:
            raise ValueError(f"the cached levels {self.levels} must include block 0")
        inputs = {}
        with self.autocast():
            tokens = heads.embed(self.model, images)
            for block in range(num_blocks + 1):
                if block in keep:
                    inputs[block] = tokens
                if block < num_blocks and any(k > block for k in keep):
                    tokens = heads.run_blocks(self.model, tokens, block, block + 1)
                    self.block_forwards += len(labels)
        self.batches.append(ScoringBatch(domain, labels, inputs))

    @torch.no_grad()
    def counts(self, mask: HeadMask) -> torch.Tensor:
        """[2, domains]: right answers and images per domain under `mask`, summed over processes."""
        num_blocks = self.num_blocks
        start = mask.first_block(default=num_blocks)
        heads.ablate(self.model, mask, mode=self.mode, alpha=self.alpha)
        device = next(self.model.parameters()).device
        totals = torch.zeros(2, self.num_domains, dtype=torch.float64, device=device)
        try:
            with self.autocast():
                for batch in self.batches:
                    # the nearest kept block at or before `start`: the blocks up to `start` are not ablated
                    level = max(k for k in batch.block_inputs if k <= start)
                    tokens = heads.run_blocks(self.model, batch.block_inputs[level], level)
                    logits = self.classify(heads.features(self.model, tokens))
                    totals[0, batch.domain] += (logits.argmax(-1) == batch.labels).sum()
                    totals[1, batch.domain] += len(batch.labels)
                    self.block_forwards += len(batch.labels) * (num_blocks - level)
        finally:
            heads.clear_ablation(self.model)
        return self.reduce(totals)

    def score(self, mask: HeadMask) -> float:
        self.evaluations += 1
        if mask in self.scores:
            return self.scores[mask]
        correct, count = self.counts(mask).cpu()
        self.total_images = int(count.sum())  # over every process
        if not bool((count > 0).any()):
            raise DGHeadsError("the scoring set is empty: no source validation images to score masks on")
        present = count > 0
        value = float((correct[present] / count[present]).mean())
        self.scores[mask] = value
        return value

    @property
    def all_equal(self) -> bool:
        """True when at least two masks were scored and all got the same score: ablation
        changes nothing this scorer can see (e.g. a randomly initialised backbone)."""
        return len(self.scores) > 1 and len(set(self.scores.values())) == 1
