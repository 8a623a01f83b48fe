"""`MaskScorer`: the staged forward it caches composes to open_clip's; an empty scoring set is refused;
a cache held within a small budget gives the same scores and searches; its size from the model config."""

import pytest
import torch

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask
from dg_heads.methods import AttentionAblation, SearchSpec
from dg_heads.methods.aat import GASpec, MaskScorer, cache_bytes, cache_dtype, genetic_search, plan_cache, scan
from dg_heads.methods.aat.scorer import RetrievalMaskScorer


@torch.no_grad()
def test_staged_forward_composes_to_open_clip(scorer):
    model, images = scorer[0].model, scorer[1]
    tokens = heads.run_blocks(model, heads.embed(model, images))
    assert torch.allclose(heads.features(model, tokens), model.visual(images), atol=1e-6)
    halfway = heads.run_blocks(model, heads.embed(model, images), 0, 2)
    assert torch.allclose(heads.features(model, heads.run_blocks(model, halfway, 2)), model.visual(images), atol=1e-6)


def test_empty_scoring_set_is_refused():
    empty = MaskScorer(heads.convert(create_clip(CLIPSpec())[0]), lambda f: f)
    with pytest.raises(DGHeadsError, match="scoring set is empty"):
        empty.score(HeadMask())
    for dim in (None, 16):  # a retrieval scorer too (a process whose share is empty still knows the width)
        nothing = RetrievalMaskScorer(heads.convert(create_clip(CLIPSpec())[0]), lambda f: f, dim=dim)
        with pytest.raises(DGHeadsError, match="scoring set is empty"):
            nothing.score(HeadMask())
    with pytest.raises(DGHeadsError, match="max_scoring_batches must be >= 1"):
        AttentionAblation(search=SearchSpec(max_scoring_batches=0))


def _refilled(scorer: MaskScorer, images, labels, levels) -> MaskScorer:
    """A scorer of the same model, classifier and images that caches only the inputs of `levels`."""
    fresh = MaskScorer(scorer.model, scorer.classify, num_domains=2, levels=levels)
    for domain in range(2):
        fresh.add(images[domain * 24:(domain + 1) * 24], labels[domain * 24:(domain + 1) * 24], domain)
    return fresh


def test_a_cache_within_a_small_budget_scores_and_searches_exactly_as_the_full_one(scorer):
    """Keeping block 0's input only (or blocks 0 and 2) recomputes the blocks up to a mask's first
    ablated one: every single-head score, the scan's map and the GA's mask and history are
    identical (not close: equal) to those of the cache of every block."""
    full, images, labels, _ = scorer
    gains = scan(full, progress=False)
    best, history = genetic_search(full, GASpec(population=6, generations=3, init_density=0.2), progress=False)
    assert gains.abs().sum() > 0 and len(set(full.scores.values())) > 2  # masks change the scores
    for levels in ((0,), (0, 2)):
        small = _refilled(full, images, labels, levels)
        assert sorted(small.batches[0].block_inputs) == list(levels)
        assert torch.equal(scan(small, progress=False), gains)
        assert genetic_search(small, GASpec(population=6, generations=3, init_density=0.2),
                              progress=False) == (best, history)
        assert small.scores == {m: full.scores[m] for m in small.scores}


def test_cache_bytes_from_the_model_config_alone_matches_the_tensors_held(scorer):
    """The tiny CLIP (32 px, patch 4: 8 x 8 + 1 = 65 tokens, width 64, 4 blocks) holds 5 levels of
    48 images in fp32; ViT-B/16 and ViT-L/14 in bf16: 13 x 197 x 768 and 25 x 257 x 1024 x 2 bytes an image."""
    full = scorer[0]
    held = sum(t.nbytes for b in full.batches for t in b.block_inputs.values())
    assert held == 48 * 5 * 65 * 64 * 4 == cache_bytes("dg-tiny-vit", 48, torch.float32)
    config = {"vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}}  # open_clip's ViT-B-16
    assert cache_bytes(config, 1) == cache_bytes("ViT-B-16", 1, "bfloat16") == 13 * 197 * 768 * 2
    assert cache_bytes("ViT-L-14", 512, cache_dtype("bf16-mixed")) == 512 * 25 * 257 * 1024 * 2
    assert cache_bytes("ViT-L-14", 512, cache_dtype("32-true"), levels=1) == 512 * 257 * 1024 * 4
    assert plan_cache(4, 100, 1000).levels == (0, 1, 2, 3, 4)
    assert plan_cache(4, 100, 250).levels == (0, 2) and plan_cache(4, 100, 199).levels == (0,)
    assert plan_cache(4, 100, 99) is None
