"""AAT's retrieval scorer (`RetrievalMaskScorer`): a mask's score is the recall of the model with
that mask ablated end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dg_heads.tasks.retrieval import retrieval_recalls


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
