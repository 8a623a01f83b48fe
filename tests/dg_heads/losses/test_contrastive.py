"""CLIP's symmetric contrastive loss, against open_clip's `ClipLoss` and by hand."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dg_heads.losses.contrastive import contrastive_loss


def test_contrastive_loss_is_open_clips_clip_loss():
    """CLIP's symmetric loss, against open_clip's own `ClipLoss` (one process)."""
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    texts = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(math.exp(math.log(1 / 0.07)))
    assert torch.allclose(contrastive_loss(images, texts, scale), ClipLoss()(images, texts, scale), atol=1e-6)
