"""The AAT search components' shared fixture: a tiny CLIP scorer whose masks change real accuracies."""

import pytest
import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.methods.aat import MaskScorer


@pytest.fixture()
def scorer():
    """The tiny CLIP with a nearest-class-mean classifier, so masks change real accuracies."""
    torch.manual_seed(0)
    model, _ = create_clip(CLIPSpec())
    heads.convert(model.eval())
    images, labels = torch.randn(48, 3, 32, 32), torch.arange(4).repeat(12)
    images += labels.view(-1, 1, 1, 1) * 0.3
    with torch.no_grad():
        features = F.normalize(model.encode_image(images), dim=-1)
        centres = F.normalize(torch.stack([features[labels == c].mean(0) for c in range(4)]), dim=-1)
    scorer = MaskScorer(model, lambda f: F.normalize(f, dim=-1) @ centres.T, num_domains=2)
    for domain in range(2):
        scorer.add(images[domain * 24:(domain + 1) * 24], labels[domain * 24:(domain + 1) * 24], domain)
    return scorer, images, labels, centres
