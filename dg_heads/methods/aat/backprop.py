"""Back-propagated ablation (`search.strategy: bp`): per-head ablation strengths to learn.

Each head's strength is `sigmoid(logit)` in (0, 1), applied as a soft ablation that blends the
head's attention weights with their ablated form (`heads.ablate_soft`), so the strengths get
gradients from the cross-entropy on the source training data; the module adds a sparsity term
(the mean strength). After training the strengths are binarised (threshold or top-k) and the
binary `HeadMask` is what validation, test and export use.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dg_heads import heads
from dg_heads.heads import HeadMask


def initial_logits(grid: tuple[int, int], strength: float) -> nn.Parameter:
    """[blocks, heads] logits whose sigmoid is `strength` everywhere."""
    return nn.Parameter(torch.full(grid, math.log(strength / (1 - strength))))


def strengths(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits)


def apply_soft(model: nn.Module, logits: torch.Tensor, mode: str, alpha: float) -> None:
    """Ablate every head by its learned strength (in the autograd graph)."""
    heads.ablate_soft(model, strengths(logits), mode, alpha)


Binarize = Literal["threshold", "topk"]  # how learned strengths become a mask (SearchSpec.bp_binarize)


def binarize(strength: torch.Tensor, how: Binarize, threshold: float, top_k: int) -> HeadMask:
    """The heads whose strength is above `threshold`, or the `top_k` strongest."""
    s = strength.detach().cpu()
    if how == "threshold":
        return HeadMask.from_tensor(s > threshold)
    chosen = torch.zeros_like(s, dtype=torch.bool)
    chosen.view(-1)[torch.topk(s.flatten(), min(top_k, s.numel())).indices] = True
    return HeadMask.from_tensor(chosen)
