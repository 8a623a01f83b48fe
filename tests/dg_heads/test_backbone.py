"""Backbone creation: tiny config offline, QuickGELU for OpenAI weights, clear errors."""

import open_clip
import pytest
import torch

from dg_heads.backbone import (
    CLIPSpec,
    build_text_classifier,
    create_clip,
    image_size_of,
    resolve_templates,
    wants_quick_gelu,
)
from dg_heads.errors import DGHeadsError


def test_tiny_model_builds_offline():
    model, tokenizer = create_clip(CLIPSpec())
    assert image_size_of(model) == 32
    with torch.no_grad():
        assert model.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
        assert model.encode_text(tokenizer(["a photo of a cat."])).shape == (1, 64)


def test_local_weights_file_loads(tmp_path):
    model, _ = create_clip(CLIPSpec())
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded, _ = create_clip(CLIPSpec(pretrained=str(path)))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_openai_weights_get_quick_gelu_even_from_a_file(tmp_path):
    assert wants_quick_gelu(CLIPSpec("ViT-B-16", "openai"))
    assert wants_quick_gelu(CLIPSpec("ViT-B-16", str(tmp_path / "ViT-B-16-openai.pt")))
    assert not wants_quick_gelu(CLIPSpec("ViT-B-16", "laion2b_s34b_b88k"))
    assert not wants_quick_gelu(CLIPSpec("ViT-B-16", str(tmp_path / "openai.pt"), quick_gelu=False))
    model, _ = create_clip(CLIPSpec(quick_gelu=True))
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


@pytest.mark.parametrize("spec, message", [
    (CLIPSpec("ViT-Q-99"), "not an open_clip model"),
    (CLIPSpec(pretrained="/no/such/weights.pt"), "does not exist"),
    (CLIPSpec("ViT-B-16", "not-a-tag"), "unknown for ViT-B-16.*openai"),
])
def test_bad_backbone_spec_is_named(spec, message):
    with pytest.raises(DGHeadsError, match=message):
        create_clip(spec)


def test_templates_named_sets_and_validation():
    assert len(resolve_templates(["openai_imagenet"])) == 80
    assert resolve_templates(["a {}."]) == ["a {}."]
    with pytest.raises(DGHeadsError, match="no '{}'"):
        resolve_templates(["a photo"])


@pytest.mark.parametrize("value", ["None", "null", ""])
def test_null_pretrained_from_the_command_line_means_random_init(value):
    assert CLIPSpec(pretrained=value).pretrained is None


def test_the_zero_shot_head_is_open_clips_in_batches_of_prompts():
    """`build_text_classifier` (what `setup` builds, on the strategy's device) is the classifier of
    open_clip's `build_zero_shot_classifier` called directly as before (10 classes a batch): 30
    classes x 80 templates, 2,400 prompts in three batches of 12 classes."""
    torch.manual_seed(0)
    model, tokenizer = create_clip(CLIPSpec())
    names, templates = [f"class {i}" for i in range(30)], resolve_templates(["openai_imagenet"])
    reference = open_clip.build_zero_shot_classifier(model, tokenizer, names, templates, num_classes_per_batch=10,
                                                     device="cpu").T
    built = build_text_classifier(model, tokenizer, names, templates, device="cpu")
    assert built.shape == (30, 64) and built.dtype == torch.float32 and built.is_contiguous()
    assert torch.allclose(built, reference, atol=1e-6)
