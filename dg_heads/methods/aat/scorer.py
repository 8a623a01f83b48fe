"""`MaskScorer`: the source accuracy of a frozen model under a head mask, with caches;
`RetrievalMaskScorer`: the same for retrieval, scoring a mask by validation recall (RSUM or one
recall) with the caption embeddings computed once (the text tower is never ablated).

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


@dataclass(frozen=True)
class SearchCost:
    """What one training-free search runs, counted from its settings (`search_cost`), per scoring
    image: `fill_blocks` blocks to fill the cache, then `block_runs` blocks over its `masks`
    distinct masks (each from the nearest kept block at or before its first ablated one)."""

    evaluations: int  # masks the search asks the scorer for (its `evaluations`), repeats included
    masks: int  # masks scored (a repeat comes from the scorer's cache); GA: at most
    block_runs: int  # blocks run over those masks, per scoring image; GA: at most
    fill_blocks: int  # blocks run to fill the cache, per scoring image (one pass: every block's when all are kept)
    blocks: int
    exact: bool  # scan: exact; GA: an upper bound (repeats and masks ablating later blocks cost less)

    @property
    def passes(self) -> float:
        """Block forwards in units of one full pass over the scoring data (the scorer's `cost`)."""
        return (self.fill_blocks + self.block_runs) / self.blocks


def search_cost(strategy: str, blocks: int, heads: int, ga=None, levels: tuple[int, ...] | None = None
                ) -> SearchCost:
    """The masks and block forwards of AAT's `scan` or `ga` search (`ga`: its `GASpec`) over a
    `blocks` x `heads` grid, with the inputs of `levels` cached (a `CachePlan`'s; None: every
    block's), counted as `MaskScorer`, `scan.scan` and `genetic.genetic_search` run them; no
    model is built. Scan: the unablated mask, then every head alone. GA: `population` masks in
    each of `generations` + 1 scorings; after the first, its `elitism` elites are repeats."""
    kept = sorted(set(range(blocks + 1) if levels is None else levels))

    def runs(first: int) -> int:  # a mask whose first ablated block is `first` (`blocks`: none ablated)
        return blocks - max(k for k in kept if k <= first)

    fill = max(kept)  # `add` runs the blocks up to the last kept one
    if strategy == "scan":
        masks = 1 + blocks * heads
        return SearchCost(masks, masks, runs(blocks) + heads * sum(runs(b) for b in range(blocks)), fill, blocks,
                          exact=True)
    if strategy == "ga":
        evaluations = ga.population * (ga.generations + 1)
        masks = ga.population + ga.generations * (ga.population - ga.elitism)  # the first holds the unablated mask
        return SearchCost(evaluations, masks, runs(blocks) + (masks - 1) * runs(0), fill, blocks, exact=False)
    raise ValueError(f"search_cost: strategy {strategy!r} is not a training-free search (scan, ga)")


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

    measure = "source validation accuracy"  # what `score` is, in the search's report
    measure_key = "source_acc"  # its name in the `search/*` metrics

    def outputs(self, mask: HeadMask):
        """(batch, `classify(features)`) of every cached batch under `mask` (a generator: the
        ablation holds while it runs, and is cleared after)."""
        num_blocks = self.num_blocks
        start = mask.first_block(default=num_blocks)
        heads.ablate(self.model, mask, mode=self.mode, alpha=self.alpha)
        try:
            with self.autocast():
                for batch in self.batches:
                    # the nearest kept block at or before `start`: the blocks up to `start` are not ablated
                    level = max(k for k in batch.block_inputs if k <= start)
                    tokens = heads.run_blocks(self.model, batch.block_inputs[level], level)
                    self.block_forwards += len(batch.labels) * (num_blocks - level)
                    yield batch, self.classify(heads.features(self.model, tokens))
        finally:
            heads.clear_ablation(self.model)

    @torch.no_grad()
    def counts(self, mask: HeadMask) -> torch.Tensor:
        """[2, domains]: right answers and images per domain under `mask`, summed over processes."""
        device = next(self.model.parameters()).device
        totals = torch.zeros(2, self.num_domains, dtype=torch.float64, device=device)
        for batch, logits in self.outputs(mask):
            totals[0, batch.domain] += (logits.argmax(-1) == batch.labels).sum()
            totals[1, batch.domain] += len(batch.labels)
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


@dataclass
class RetrievalMaskScorer(MaskScorer):
    """Validation recall of the frozen model under a head mask: `metric` (`rsum`, or one recall
    such as `i2t_r1`; `dg_heads.tasks.metrics`), the mean over the evaluation datasets
    (`num_domains`). A cached batch's `labels` are its images' indices in their split; `classify`
    maps the image tower's output to the joint embedding (normalised). The captions' embeddings
    are added once (`add_texts`): the text tower is never ablated. Under DDP each process caches
    its share of the images; `gather` concatenates a tensor over the processes, so every mask's
    image embeddings are ranked together against every caption, the same on every process (and
    the same as with one)."""

    metric: str = "rsum"
    gather: Callable[[torch.Tensor], torch.Tensor] = _no_reduce  # concatenation over processes
    dim: int | None = None  # the joint embedding's width: a process with no scoring image still gathers
    texts: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    _gathered_texts: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    @property
    def measure(self) -> str:
        return f"validation {self.metric.upper() if self.metric == 'rsum' else self.metric}"

    @property
    def measure_key(self) -> str:
        return f"val_{self.metric}"

    def add_texts(self, domain: int, text_emb: torch.Tensor, text_image: torch.Tensor, text_pos: torch.Tensor) -> None:
        """This process's captions of one cached batch: their embeddings, image indices and places."""
        self.texts.setdefault(domain, []).append((text_emb.float(), text_image.long(), text_pos.long()))

    def _all_texts(self, domain: int, dim: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._gathered_texts is None:  # once, every process together (the first score)
            self._gathered_texts = {}
            for d in range(self.num_domains):
                parts = self.texts.get(d, [])
                emb = torch.cat([p[0] for p in parts]) if parts else torch.empty(0, dim, device=device)
                image = torch.cat([p[1] for p in parts]) if parts else torch.empty(0, dtype=torch.long, device=device)
                pos = torch.cat([p[2] for p in parts]) if parts else torch.empty(0, dtype=torch.long, device=device)
                self._gathered_texts[d] = (self.gather(emb), self.gather(image), self.gather(pos))
        return self._gathered_texts[domain]

    @torch.no_grad()
    def recalls(self, mask: HeadMask) -> list[dict[str, float]]:
        """Every recall and RSUM of each evaluation dataset under `mask` (`tasks.retrieval`)."""
        from dg_heads.tasks.retrieval import ordered, retrieval_recalls

        device = next(self.model.parameters()).device
        local: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {d: [] for d in range(self.num_domains)}
        for batch, features in self.outputs(mask):
            local[batch.domain].append((features.float(), batch.labels))
        dim = next((f.shape[1] for parts in local.values() for f, _ in parts), None)
        dim = dim if dim is not None else next((t[0].shape[1] for parts in self.texts.values() for t in parts), None)
        dim = dim if dim is not None else self.dim  # this process has no scoring image: its share is empty
        if dim is None:
            raise DGHeadsError("the scoring set is empty: no validation images to score masks on")
        out, total = [], 0
        for domain in range(self.num_domains):
            parts = local[domain]
            emb = torch.cat([f for f, _ in parts]) if parts else torch.empty(0, dim, device=device)
            index = torch.cat([i for _, i in parts]) if parts else torch.empty(0, dtype=torch.long, device=device)
            text_emb, text_image, text_pos = self._all_texts(domain, dim, device)
            image_emb, text_emb, text_row = ordered(self.gather(emb), self.gather(index), text_emb, text_image,
                                                    text_pos)
            total += len(image_emb)
            if len(image_emb):
                out.append(retrieval_recalls(image_emb, text_emb, text_row))
        self.total_images = total
        return out

    def score(self, mask: HeadMask) -> float:
        self.evaluations += 1
        if mask in self.scores:
            return self.scores[mask]
        per_dataset = self.recalls(mask)
        if not per_dataset:
            raise DGHeadsError("the scoring set is empty: no validation images to score masks on")
        value = sum(r[self.metric] for r in per_dataset) / len(per_dataset)
        self.scores[mask] = value
        return value
