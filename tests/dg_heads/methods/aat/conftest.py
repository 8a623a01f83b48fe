"""The AAT tests' shared fixtures: a tiny CLIP scorer whose masks change real accuracies, and the
seeded bp module and tiny data of the in-process (plain Trainer) runs."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.data import DomainBedDataModule
from dg_heads.methods import AttentionAblation, SearchSpec
from dg_heads.methods.aat import MaskScorer
from dg_heads.optim import OptimSpec


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


@pytest.fixture()
def bp_in_process(data_root):
    """`(model, data)` for a plain-Trainer run: AAT bp on the random-init tiny CLIP (its mask the
    top 3 heads: never empty), seeded, and RotatedDigits at 32 px, 4 images per source domain."""
    L.seed_everything(0, verbose=False)
    clip = CLIPSpec(model_name="dg-tiny-vit", pretrained=None, templates=["a photo of the digit {}."])
    model = AttentionAblation(clip=clip, optim=OptimSpec(lr=5e-2, weight_decay=0.0, schedule="constant"),
                              search=SearchSpec(strategy="bp", bp_binarize="topk", bp_top_k=3, max_scoring_batches=1))
    data = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, batch_size_per_domain=4,
                               eval_batch_size=16, num_workers=0, train_augment="none")
    return model, data
