"""The single-head scan: each head's score equals an independent evaluation of that ablation, at the cached cost."""

import pytest
import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.methods.aat import scan


@torch.no_grad()
def test_scan_scores_equal_independent_single_ablation_evaluations(scorer):
    scorer, images, labels, centres = scorer
    gains = scan(scorer, progress=False)
    model = scorer.model

    def accuracy(mask):
        heads.ablate(model, mask)
        logits = F.normalize(model.encode_image(images), dim=-1) @ centres.T
        heads.clear_ablation(model)
        right = logits.argmax(-1) == labels
        return (right[:24].float().mean() + right[24:].float().mean()).item() / 2

    base = accuracy({})
    for block in range(4):
        for head in range(4):
            assert gains[block, head] == pytest.approx(accuracy({block: [head]}) - base, abs=1e-6)
    assert gains.abs().sum() > 0  # the map is not trivially flat
    # caches: one pass fills them, then head h of block l costs (L - l) / L of a pass: 1 + H (L + 1) / 2
    assert scorer.cost == pytest.approx(1 + 4 * (4 + 1) / 2)
