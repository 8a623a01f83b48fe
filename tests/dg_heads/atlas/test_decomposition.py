"""TextSpan's decomposition on the tiny CLIP: the direct terms sum to open_clip's own embedding,
and a last-block head's term is what removing that head changes (fp32, and under bf16 autocast)."""

import open_clip
import pytest
import torch

import dg_heads.backbone  # noqa: F401  (registers the tiny config)
from dg_heads import heads
from dg_heads.atlas.decomposition import decompose


def _tiny(seed: int = 0, controls: bool = True):
    torch.manual_seed(seed)
    model = open_clip.create_model("dg-tiny-vit").eval()
    heads.convert(model)
    if controls:  # everything a method leaves in the tower: gates, head-aware LoRA (o too), an ablation
        heads.add_gates(model)
        heads.add_lora(model, targets=("q", "v", "o"), ranks=2)
        for attn in heads.head_attentions(model):
            attn.gate.theta.data.normal_()
            for factor in attn.lora.factors.values():
                factor.data.normal_(0, 0.1)
        heads.ablate(model, {1: [0, 2]})
    return model


@pytest.mark.parametrize("controls", [False, True], ids=["plain", "gates_lora_ablation"])
def test_direct_terms_sum_to_the_image_embedding(controls):
    model = _tiny(controls=controls)
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(images)  # open_clip's own forward, unnormalised
    parts = decompose(model, images)
    blocks, num_heads = heads.head_grid(model)
    assert parts.heads.shape == (5, blocks, num_heads, expected.shape[1])
    assert {"embeddings", "ln_post_bias", *(f"mlp_{b}" for b in range(blocks))} <= set(parts.other)
    torch.testing.assert_close(parts.total(), expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.5  # not a trivially small embedding


def test_a_heads_term_is_what_removing_it_changes_in_the_attention_output():
    """Zeroing a head (the engine's ablation) changes what its block's attention writes into the
    residual stream by exactly that head's residual term; through the final LN linearised at the
    residual's statistics and `proj`, that difference must be the head's direct term."""
    model = _tiny(controls=False)
    images = torch.randn(4, 3, 32, 32)
    visual = model.visual
    seen = {}
    last = heads.head_grid(model)[0] - 1
    hooks = [visual.ln_post.register_forward_hook(lambda m, inputs, out: seen.__setitem__("final", inputs[0][:, 0])),
             visual.transformer.resblocks[last].ls_1.register_forward_hook(
                 lambda m, inputs, out: seen.__setitem__("attention", out[:, 0]))]
    with torch.no_grad():
        model.encode_image(images)
        final, full = seen["final"].clone(), seen["attention"].clone()
        heads.ablate(model, {last: [1]})
        model.encode_image(images)
        heads.clear_ablation(model)
    for hook in hooks:
        hook.remove()
    delta = full - seen["attention"]  # the head's residual term
    std = torch.sqrt(final.var(-1, unbiased=False) + visual.ln_post.eps)
    expected = ((delta - delta.mean(-1, keepdim=True)) / std[:, None] * visual.ln_post.weight) @ visual.proj
    parts = decompose(model, images)
    torch.testing.assert_close(parts.heads[:, last, 1], expected.detach(), atol=1e-5, rtol=1e-4)
    assert expected.norm() > 1e-3


def test_decomposition_runs_under_bf16_autocast_on_the_cpu():
    model = _tiny()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(images)
    parts = decompose(model, images, torch.autocast("cpu", dtype=torch.bfloat16))
    assert parts.heads.dtype == torch.float32 and torch.isfinite(parts.heads).all()
    error = (parts.total() - expected).norm() / expected.norm()
    assert error < 0.05, error  # bf16's rounding, not a wrong decomposition
