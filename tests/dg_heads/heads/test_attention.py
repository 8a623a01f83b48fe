"""Numerical equivalence of the converted image tower with open_clip's own forward (fp32, random init)."""

import copy

import open_clip
import pytest
import torch

import dg_heads.backbone  # noqa: F401  (registers the tiny config)
from dg_heads import heads

TOL = 1e-5
CONFIGS = [
    pytest.param("dg-tiny-vit", 4, id="tiny"),
    pytest.param("ViT-B-32", 2, id="B-32"),
    pytest.param("ViT-B-16", 2, id="B-16-224"),
    pytest.param("ViT-B-16-quickgelu", 1, id="B-16-quickgelu"),
]


def _pair(name: str):
    torch.manual_seed(0)
    native = open_clip.create_model(name).eval()
    converted = heads.convert(copy.deepcopy(native))
    size = dg_heads.backbone.image_size_of(native)
    return native, converted, size


def _realistic_lora_and_gates(model):
    """LoRA factors of a trained adapter's magnitude, random gates, a scale ablation."""
    torch.manual_seed(1)
    heads.add_lora(model, ("q", "k", "v", "o"), 4)
    for attn in heads.head_attentions(model):
        for p in attn.lora.factors.values():
            p.data.normal_(std=0.02)
    heads.add_gates(model)
    for attn in heads.head_attentions(model):
        attn.gate.theta.data.normal_(std=0.5)
    heads.ablate(model, {0: [1], len(heads.head_attentions(model)) - 1: [0, 2]}, mode="scale", alpha=0.3)


@pytest.mark.parametrize("name, batch", CONFIGS)
@torch.no_grad()
def test_converted_model_matches_open_clip(name, batch, tmp_path):
    native, converted, size = _pair(name)
    assert list(converted.state_dict()) == list(native.state_dict())
    x = torch.randn(batch, 3, size, size)
    reference = native.encode_image(x)
    assert torch.equal(converted.encode_image(x), reference)  # no control: the native code path

    with heads.tapping(converted):  # forces the explicit per-head SDPA path, changes nothing
        assert (converted.encode_image(x) - reference).abs().max() <= TOL

    last = len(heads.head_attentions(converted)) - 1
    heads.ablate(converted, {last: [1]}, mode="zero")
    edited = copy.deepcopy(native)
    d_h = heads.head_attentions(converted)[last].head_dim
    edited.visual.transformer.resblocks[last].attn.out_proj.weight[:, d_h:2 * d_h] = 0
    assert (converted.encode_image(x) - edited.encode_image(x)).abs().max() <= TOL

    _realistic_lora_and_gates(converted)
    expected = converted.encode_image(x)
    path = heads.save_export(converted, tmp_path / "exported.pt")
    reloaded = open_clip.create_model(name, pretrained=str(path)).eval()
    assert all(type(b.attn) is torch.nn.MultiheadAttention for b in reloaded.visual.transformer.resblocks)
    assert (reloaded.encode_image(x) - expected).abs().max() <= TOL
