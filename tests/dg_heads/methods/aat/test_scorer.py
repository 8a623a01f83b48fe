"""`MaskScorer`: the staged forward it caches composes to open_clip's; an empty scoring set is refused."""

import pytest
import torch

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask
from dg_heads.methods import AttentionAblation, SearchSpec
from dg_heads.methods.aat import MaskScorer


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
    with pytest.raises(DGHeadsError, match="max_scoring_batches must be >= 1"):
        AttentionAblation(search=SearchSpec(max_scoring_batches=0))
