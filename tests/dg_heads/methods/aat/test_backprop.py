"""Back-propagated ablation's parts: logits whose sigmoid is the initial strength, a soft ablation
that at strengths 0/1 is the hard ablation of those heads and passes gradients to the logits, and
the binarised mask (threshold or top-k)."""

from __future__ import annotations

import math

import pytest
import torch

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.heads import HeadMask
from dg_heads.methods.aat.backprop import apply_soft, binarize, initial_logits, strengths


def test_initial_logits_give_the_strength_everywhere():
    logits = initial_logits((2, 3), 0.8)
    assert logits.shape == (2, 3) and logits.requires_grad
    assert torch.allclose(logits, torch.full((2, 3), math.log(4.0)))  # 0.8 / 0.2 = 4
    assert strengths(torch.tensor([0.0, math.log(3.0)])).tolist() == pytest.approx([0.5, 0.75])


def test_binarize_by_threshold_or_top_k():
    s = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.55]])
    assert binarize(s, "threshold", 0.58, 0) == HeadMask.from_pairs([(0, 0), (0, 2), (1, 1)])
    assert binarize(s, "topk", 0.0, 2) == HeadMask.from_pairs([(0, 0), (1, 1)])
    assert binarize(s, "topk", 0.0, 4) == HeadMask.from_pairs([(0, 0), (0, 2), (1, 1), (1, 2)])
    assert binarize(s, "topk", 0.0, 99) == HeadMask.from_pairs((b, h) for b in range(2) for h in range(3))


def test_soft_ablation_at_full_strength_is_the_hard_ablation_and_trains_the_logits():
    torch.manual_seed(0)
    model = heads.convert(create_clip(CLIPSpec())[0]).eval()  # 4 blocks x 4 heads
    images = torch.randn(2, 3, 32, 32)
    mask = HeadMask.from_pairs([(0, 1), (2, 3)])
    with torch.no_grad():
        heads.ablate(model, mask)
        expected = model.encode_image(images)
        heads.clear_ablation(model)
        plain = model.encode_image(images)
    logits = torch.full((4, 4), -40.0)  # strength ~0
    logits[0, 1] = logits[2, 3] = 40.0  # strength ~1
    logits.requires_grad_(True)
    apply_soft(model, logits, "zero", 0.0)
    out = model.encode_image(images)
    heads.clear_ablation(model)
    assert torch.allclose(out, expected, atol=1e-5) and not torch.allclose(out, plain, atol=1e-3)
    halfway = initial_logits((4, 4), 0.5)
    apply_soft(model, halfway, "zero", 0.0)
    model.encode_image(images).pow(2).sum().backward()
    heads.clear_ablation(model)
    assert halfway.grad is not None and halfway.grad.abs().sum() > 0
