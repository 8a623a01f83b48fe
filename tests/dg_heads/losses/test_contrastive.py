"""CLIP's symmetric contrastive loss, against open_clip's `ClipLoss` and by hand."""

from __future__ import annotations

import math

import pytest
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


def test_contrastive_loss_of_a_hand_computed_case():
    """Images (1, 0), (0, 1); texts (1, 0), (1, 1)/sqrt(2); scale 2. Logits (image rows): [2, r], [0, r] with
    r = sqrt(2). Image -> text: -log(e^2 / (e^2 + e^r)), -log(e^r / (1 + e^r)); text -> image (the columns
    [2, 0], [r, r]): -log(e^2 / (e^2 + 1)), log 2. The loss is the mean of the two directions' means."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [1.0, 1.0]]) / torch.tensor([[1.0], [math.sqrt(2)]])
    r = math.sqrt(2)
    i2t = (-math.log(math.exp(2) / (math.exp(2) + math.exp(r))) - math.log(math.exp(r) / (1 + math.exp(r)))) / 2
    t2i = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert contrastive_loss(images, texts, 2.0).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
