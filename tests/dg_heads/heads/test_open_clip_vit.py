"""The one module that knows open_clip's internals: supported versions, and a clear refusal of
a ViT whose attention it cannot convert."""

import copy
from importlib.metadata import version

import pytest
import tomllib
import torch
from packaging.specifiers import SpecifierSet
from torch import nn

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadAttention
from dg_heads.heads.open_clip_vit import SUPPORTED_OPEN_CLIP
from tests.conftest import REPO


def test_supported_open_clip_versions_are_declared_once_and_installed():
    """open_clip_torch 3.x: pyproject.toml declares the range the engine states, and the
    installed open_clip is inside it."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = [d for d in dependencies if d.replace("-", "_").startswith("open_clip_torch")]
    assert declared == ["open_clip_torch" + SUPPORTED_OPEN_CLIP]
    assert SpecifierSet(SUPPORTED_OPEN_CLIP) == SpecifierSet(">=3.0,<4")
    assert version("open_clip_torch") in SpecifierSet(SUPPORTED_OPEN_CLIP)


class OwnAttention(nn.Module):
    """Stands in for open_clip main's own attention module (not an nn.MultiheadAttention)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x, *args, **kwargs):
        return x


def test_a_vit_without_multihead_attention_is_refused_before_anything_is_converted():
    model, _ = create_clip(CLIPSpec())
    blocks = model.visual.transformer.resblocks
    blocks[2].attn = OwnAttention(blocks[2].attn.embed_dim)
    with pytest.raises(DGHeadsError, match=r"block 2 of the VisionTransformer has attention OwnAttention, not "
                                           r"torch\.nn\.MultiheadAttention: .*open_clip_torch>=3\.0,<4 ViTs "
                                           r"\(installed: 3\.\d+\.\d+\)"):
        heads.convert(model)
    assert not any(isinstance(b.attn, HeadAttention) for b in blocks)  # nothing converted half-way


def test_a_tower_that_is_no_open_clip_vit_is_named():
    with pytest.raises(DGHeadsError, match="Linear is not an open_clip ViT image tower"):
        heads.convert(nn.Linear(2, 2))


@torch.no_grad()
def test_staged_forward_composes_to_the_tower():
    torch.manual_seed(0)
    model = heads.convert(create_clip(CLIPSpec())[0].eval())
    native = copy.deepcopy(model)
    x = torch.randn(3, 3, 32, 32)
    tokens = heads.embed(model, x)
    assert tokens.shape == (3, 65, 64)  # batch-first: CLS + 8x8 patches of 4 pixels, width 64
    for start in range(4):
        tokens = heads.run_blocks(model, tokens, start, start + 1)
    assert torch.allclose(heads.features(model, tokens), native.visual(x), atol=1e-6)
