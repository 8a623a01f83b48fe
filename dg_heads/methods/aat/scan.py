"""The single-head scan: ablate each head alone and score it (the head-importance map)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from dg_heads.heads import HeadMask
from dg_heads.methods.aat.scorer import MaskScorer


def scan(scorer: MaskScorer, progress: bool = True) -> torch.Tensor:
    """Score gain of ablating each head alone ([blocks, heads]; > 0: the head hurts)."""
    blocks, per_block = scorer.grid
    base = scorer.score(HeadMask())
    gains = torch.zeros(blocks, per_block)
    pairs = [(b, h) for b in range(blocks) for h in range(per_block)]
    for block, head in tqdm(pairs, desc="scan", disable=not progress, unit="head"):
        gains[block, head] = scorer.score(HeadMask.from_pairs([(block, head)])) - base
    return gains


def top_heads(gains: torch.Tensor, top_k: int) -> HeadMask:
    """The `top_k` heads whose ablation helps most, among those that help at all (gain > 0)."""
    order = torch.argsort(gains.flatten(), descending=True, stable=True)[:top_k]
    chosen = torch.zeros(gains.numel(), dtype=torch.bool)
    chosen[order] = gains.flatten()[order] > 0
    return HeadMask.from_tensor(chosen.view_as(gains))
