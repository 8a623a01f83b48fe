"""The retrieval metric (CLIP_benchmark's semantics, in percent), its gathering (any order, a
repeated image once) and CLIP's contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dg_heads.losses.contrastive import contrastive_loss
from dg_heads.tasks.retrieval import RetrievalEmbeddings, retrieval_recalls


def _tiny_case():
    """3 images, 5 captions in 2-D (unit vectors): image 0 = (1, 0), image 1 = (0, 1), image 2 = (-1, 0);
    captions 0, 1 of image 0, caption 2 of image 1, captions 3, 4 of image 2."""
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    texts = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.2]]), dim=-1)
    return images, texts, torch.tensor([0, 0, 1, 2, 2])


def test_recalls_of_a_hand_computed_case():
    """By hand (cosines): text -> image, each caption's nearest images: c0 -> i0 (hit at 1), c1 -> i1, i0
    (hit at 2), c2 -> i1 (hit at 1), c3 -> i0, i1, i2 (hit at 3), c4 -> i2 (hit at 1): R@1 3/5, R@2 4/5.
    Image -> text, each image's nearest captions: i0 -> c3 (image 2's), c0 (its own): miss at 1, hit at 2;
    i1 -> c2 (hit at 1); i2 -> c4 (hit at 1): R@1 2/3, R@2 3/3. k beyond the candidates: every one."""
    images, texts, text_image = _tiny_case()
    got = retrieval_recalls(images, texts, text_image, ks=(1, 2, 5, 10))
    assert got["t2i_r1"] == pytest.approx(60.0)
    assert got["t2i_r2"] == pytest.approx(80.0)
    assert got["t2i_r5"] == got["t2i_r10"] == pytest.approx(100.0)  # 3 images: all of them
    assert got["i2t_r1"] == pytest.approx(200 / 3)
    assert got["i2t_r2"] == got["i2t_r5"] == got["i2t_r10"] == pytest.approx(100.0)
    default = retrieval_recalls(images, texts, text_image)
    assert default["rsum"] == pytest.approx(200 / 3 + 100 + 100 + 60 + 100 + 100)
    assert set(default) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}


def test_gathered_embeddings_are_ordered_and_each_image_counted_once():
    """Shares in any order (as processes deliver them), an image repeated (a padding sampler): the
    figures of the data in order, each image once."""
    images, texts, text_image = _tiny_case()
    expected = retrieval_recalls(images, texts, text_image)
    metric = RetrievalEmbeddings(embed_dim=2)
    # "process 1": image 2 with its captions (in reverse order); "process 0": images 1, 0; image 0 again
    metric.update(images[[2]], torch.tensor([2]), texts[[4, 3]], torch.tensor([2, 2]), torch.tensor([1, 0]))
    metric.update(images[[1, 0]], torch.tensor([1, 0]), texts[[2, 0, 1]], torch.tensor([1, 0, 0]),
                  torch.tensor([0, 0, 1]))
    metric.update(images[[0]], torch.tensor([0]), texts[[0, 1]], torch.tensor([0, 0]), torch.tensor([0, 1]))
    image_emb, text_emb, rows = metric.compute()
    assert torch.equal(image_emb, images) and torch.equal(text_emb, texts) and torch.equal(rows, text_image)
    assert retrieval_recalls(image_emb, text_emb, rows) == expected


def test_contrastive_loss_is_open_clips_clip_loss():
    """CLIP's symmetric loss, against open_clip's own `ClipLoss` (one process)."""
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    texts = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(math.exp(math.log(1 / 0.07)))
    assert torch.allclose(contrastive_loss(images, texts, scale), ClipLoss()(images, texts, scale), atol=1e-6)


@torch.no_grad()
def test_retrieval_mask_scorer_scores_a_mask_as_the_ablated_model_ranks():
    """AAT's retrieval scorer (block inputs cached, captions embedded once, images of two datasets)
    gives, for no mask and for a mask, the mean RSUM of the model with that mask ablated end to end
    (open_clip's `encode_image` through the ablated heads), and one recall when asked for it."""
    from dg_heads import heads
    from dg_heads.backbone import CLIPSpec, create_clip
    from dg_heads.heads import HeadMask
    from dg_heads.methods.aat.scorer import RetrievalMaskScorer

    torch.manual_seed(0)
    model, tokenizer = create_clip(CLIPSpec())
    model = heads.convert(model).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(6, 3, 32, 32, generator=g), torch.randn(5, 3, 32, 32, generator=g)]
    captions = [[f"caption {d} {i} {j}" for i in range(len(x)) for j in range(2)] for d, x in enumerate(images)]
    texts = [F.normalize(model.encode_text(tokenizer(c)), dim=-1) for c in captions]
    text_image = [torch.arange(len(x)).repeat_interleave(2) for x in images]

    def expected(mask: HeadMask, metric: str) -> float:
        heads.ablate(model, mask)
        try:
            values = [retrieval_recalls(F.normalize(model.encode_image(x), dim=-1), t, ti)[metric]
                      for x, t, ti in zip(images, texts, text_image)]
        finally:
            heads.clear_ablation(model)
        return sum(values) / len(values)

    for metric in ("rsum", "t2i_r1"):
        scorer = RetrievalMaskScorer(model, lambda f: F.normalize(f.float(), dim=-1), num_domains=2, metric=metric)
        for d, (x, t, ti) in enumerate(zip(images, texts, text_image)):
            order = torch.arange(len(x)).flip(0)  # a share in any order
            scorer.add(x[order], order, d)
            scorer.add_texts(d, t, ti, torch.arange(len(ti)) % 2)
        mask = HeadMask.from_pairs([(1, 0), (2, 3)])
        assert scorer.score(HeadMask()) == pytest.approx(expected(HeadMask(), metric))
        assert scorer.score(mask) == pytest.approx(expected(mask, metric))
        if metric == "rsum":
            assert scorer.score(mask) != scorer.score(HeadMask())  # the mask changes the ranking
    assert scorer.total_images == 11 and scorer.measure == "validation t2i_r1"
