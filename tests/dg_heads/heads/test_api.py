"""Per-head controls: ablation semantics, LoRA, gates, the tapping scope, merge/unmerge, export, bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadAttention, HeadMask, open_clip_vit

D, H, N = 32, 4, 7


def _attention(seed: int = 0) -> HeadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(D, H, batch_first=True).double()
    nn.init.normal_(mha.out_proj.bias)
    nn.init.normal_(mha.in_proj_bias)
    return open_clip_vit.adopt(mha, HeadAttention)


def _explicit(attn: HeadAttention, x: torch.Tensor, edit=None) -> torch.Tensor:
    """Self-attention written out with explicit weights A; `edit(h, A)` may replace head h's A."""
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    q, k, v = (t.unflatten(-1, (H, D // H)).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, dim=-1)
    if edit is not None:
        a = torch.stack([edit(h, a[:, h]) for h in range(H)], dim=1)
    return attn.out_proj((a @ v).transpose(1, 2).flatten(-2))


EDITS = {
    "zero": lambda a: torch.zeros_like(a),
    "identity": lambda a: torch.eye(N, dtype=a.dtype).expand_as(a),
    "uniform": lambda a: torch.full_like(a, 1.0 / N),
    "scale": lambda a: 0.25 * a,
}


@pytest.mark.parametrize("mode", list(EDITS))
@torch.no_grad()
def test_ablation_equals_editing_the_attention_weights(mode):
    attn = _attention()
    x = torch.randn(3, N, D, dtype=torch.float64)
    assert torch.allclose(attn(x, x, x)[0], _explicit(attn, x))
    strength = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    attn.set_ablation(mode, strength, alpha=0.25)
    expected = _explicit(attn, x, lambda h, a: EDITS[mode](a) if strength[h] else a)
    assert torch.allclose(attn(x, x, x)[0], expected, atol=1e-10)


@torch.no_grad()
def test_partial_strength_blends_the_attention_weights():
    attn = _attention()
    x = torch.randn(2, N, D, dtype=torch.float64)
    attn.set_ablation("identity", torch.tensor([0.3, 0, 0, 0], dtype=torch.float64))
    expected = _explicit(attn, x, lambda h, a: 0.7 * a + 0.3 * EDITS["identity"](a) if h == 0 else a)
    assert torch.allclose(attn(x, x, x)[0], expected, atol=1e-10)


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    model, _ = create_clip(CLIPSpec())
    return heads.convert(model.eval())


@torch.no_grad()
def test_fresh_lora_and_gates_change_nothing(tiny):
    x = torch.randn(2, 3, 32, 32)
    reference = tiny.encode_image(x)
    heads.add_lora(tiny, ("q", "v"), [2, 2, 8, 8])
    heads.add_gates(tiny)
    assert torch.allclose(heads.gate_values(tiny), torch.ones(4, 4))
    assert (tiny.encode_image(x) - reference).abs().max() <= 1e-5


@torch.no_grad()
def test_merge_and_unmerge_round_trip(tiny):
    x = torch.randn(2, 3, 32, 32)
    heads.add_lora(tiny, ("q", "k", "v", "o"), 4)
    for attn in heads.head_attentions(tiny):
        for p in attn.lora.factors.values():
            p.normal_(std=0.02)
    weights = [a.in_proj_weight.clone() for a in heads.head_attentions(tiny)]
    adapted = tiny.encode_image(x)
    heads.merge_lora(tiny)
    assert not heads.head_attentions(tiny)[0].controlled  # merged LoRA runs the native path
    assert (tiny.encode_image(x) - adapted).abs().max() <= 1e-5
    heads.unmerge_lora(tiny)
    assert all((a.in_proj_weight - w).abs().max() <= 1e-6 for a, w in zip(heads.head_attentions(tiny), weights))


@torch.no_grad()
def test_add_lora_on_a_merged_block_takes_the_merged_update_out_first(tiny):
    """A merged adapter's update lives in the base weights; replacing or removing the adapter
    must take it out, or the model silently keeps a LoRA nobody can see."""
    x = torch.randn(2, 3, 32, 32)
    reference = tiny.encode_image(x)
    base = [(a.in_proj_weight.clone(), a.out_proj.weight.clone()) for a in heads.head_attentions(tiny)]
    heads.add_lora(tiny, ("q", "k", "v", "o"), 4)
    for attn in heads.head_attentions(tiny):
        for p in attn.lora.factors.values():
            p.normal_(std=0.05)
    heads.merge_lora(tiny)
    assert (tiny.encode_image(x) - reference).abs().max() > 1e-2  # the merged adapter does change the model
    heads.add_lora(tiny, ("q", "v"), 2)  # fresh adapters (B = 0) in place of the merged ones
    assert not any(a.lora_merged for a in heads.head_attentions(tiny))
    for attn, (in_w, out_w) in zip(heads.head_attentions(tiny), base):
        assert (attn.in_proj_weight - in_w).abs().max() <= 1e-6 and (attn.out_proj.weight - out_w).abs().max() <= 1e-6
    assert (tiny.encode_image(x) - reference).abs().max() <= 1e-5

    attn = heads.head_attentions(tiny)[1]  # removing a merged adapter by hand takes its update out too
    attn.lora.factors["q_B"].normal_(std=0.05)
    attn.merge_lora()
    attn.lora = None
    assert not attn.lora_merged and (attn.in_proj_weight - base[1][0]).abs().max() <= 1e-6


def test_tapping_records_every_head_of_one_forward_for_the_caller_only(tiny):
    """The scope's record holds each chosen block's head outputs of the forward run inside it, in
    the autograd graph, before the block's own gate (with the gate values beside); nothing of it
    stays on the model (the old `set_taps` / `taps` side channel is gone)."""
    heads.add_gates(tiny, blocks=[2, 3])
    attns = heads.head_attentions(tiny)
    with torch.no_grad():
        attns[3].gate.theta.normal_()
    outputs = []
    hook = tiny.visual.transformer.resblocks[3].attn.register_forward_hook(
        lambda m, i, out: outputs.append(out[0]))
    with heads.tapping(tiny, blocks=[2, 3]) as taps:
        features = tiny.encode_image(torch.randn(5, 3, 32, 32))
    hook.remove()
    assert set(taps) == {2, 3} and taps[3]["cls"].shape == taps[2]["mean"].shape == (5, 4, 16)
    gate = attns[3].gate.values()
    assert torch.equal(taps[3]["gate"], gate)
    # block 3's attention output at the class token is its out_proj of the gated tapped heads
    token = outputs[0][:, 0] if attns[3].batch_first else outputs[0][0]
    by_hand = attns[3].out_proj((taps[3]["cls"] * gate[None, :, None]).flatten(1))
    torch.testing.assert_close(by_hand, token, atol=1e-5, rtol=1e-5)
    taps[3]["cls"].pow(2).sum().backward()  # taps sit in the graph: a loss on them trains upstream parts
    assert attns[2].gate.theta.grad.abs().sum() > 0  # block 2's gate shapes block 3's input
    assert attns[3].gate.theta.grad is None  # the tap is taken before block 3's own gate
    assert features.requires_grad
    assert all(a.tap_sink is None and not {"tap", "tap_enabled"} & set(vars(a)) for a in attns)
    assert not {"set_taps", "taps", "clear_taps"} & set(dir(heads))


@torch.no_grad()
def test_gates_fold_into_the_output_projection(tiny):
    heads.add_gates(tiny)
    for attn in heads.head_attentions(tiny):
        attn.gate.theta.normal_()
    x = torch.randn(2, 3, 32, 32)
    assert (heads.export(tiny).encode_image(x) - tiny.encode_image(x)).abs().max() <= 1e-5
    assert heads.gate_values(tiny).sum(1).allclose(torch.full((4,), 4.0))


@pytest.mark.parametrize("mode", ["identity", "uniform"])
def test_export_refuses_ablations_it_cannot_fold(tiny, mode):
    heads.ablate(tiny, {1: [0]}, mode=mode)
    with pytest.raises(DGHeadsError, match=f"cannot export: '{mode}' ablation cannot be folded"):
        heads.export(tiny)
    heads.clear_ablation(tiny)
    assert heads.ablation_mask(tiny) == HeadMask()
    heads.export(tiny)


def test_ablation_mask_round_trip(tiny):
    heads.ablate(tiny, {"3": [2, 0], 1: [1]})
    assert heads.ablation_mask(tiny).to_dict() == {1: [1], 3: [0, 2]}
    heads.ablate(tiny, HeadMask.from_pairs([(0, 3)]))  # replaces the earlier ablation
    assert heads.ablation_mask(tiny) == HeadMask.from_pairs([(0, 3)])


@pytest.mark.parametrize("call, message", [
    (lambda m: heads.ablate(m, {4: [0]}), r"block 4 does not exist: the image tower has blocks 0\.\.3"),
    (lambda m: heads.ablate(m, {0: [4]}), r"head 4 of block 0 does not exist: heads are 0\.\.3"),
    (lambda m: heads.ablate(m, {0: [0]}, mode="mean"), r"'mean' is not one of \('zero'"),
    (lambda m: heads.add_lora(m, ("q", "x")), r"\['x'\]; expected a subset of \['q', 'k', 'v', 'o'\]"),
    (lambda m: heads.add_lora(m, ("q",), [8, 8]),
     r"ranks \[8, 8\] has 2 entries; expected one per block of the image tower \(4 blocks\)"),
    (lambda m: heads.add_gates(m, blocks=[-1]), r"block -1 does not exist"),
])
def test_bad_input_names_value_and_range(tiny, call, message):
    with pytest.raises(DGHeadsError, match=message):
        call(tiny)


def test_unconverted_model_is_named():
    model, _ = create_clip(CLIPSpec())
    with pytest.raises(DGHeadsError, match="not converted"):
        heads.head_attentions(model)


@torch.no_grad()
def test_convert_keeps_parameters_shared():
    """Converting adopts open_clip's modules: the very same parameter objects under the same
    names (an optimiser or a checkpoint made before still points at them), the same outputs."""
    torch.manual_seed(0)
    model, _ = create_clip(CLIPSpec())
    model.eval()
    native = copy.deepcopy(model)
    before = dict(model.named_parameters())
    assert not any(isinstance(m, HeadAttention) for m in model.modules())  # not converted yet
    heads.convert(model)
    assert len(heads.head_attentions(model)) == 4  # converted here, in this test
    after = dict(model.named_parameters())
    assert list(after) == list(before) and all(after[name] is before[name] for name in before)
    assert list(model.state_dict()) == list(native.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.encode_image(x), native.encode_image(x))


@torch.no_grad()
def test_fixed_gates_scale_head_outputs_and_fold(tiny):
    x = torch.randn(2, 3, 32, 32)
    values = torch.rand(4, 4) * 2
    heads.add_gates(tiny, learnable=False, values=values)
    assert torch.equal(heads.gate_values(tiny), values)
    assert not list(tiny.visual.transformer.resblocks[0].attn.gate.parameters())
    assert (heads.export(tiny).encode_image(x) - tiny.encode_image(x)).abs().max() <= 1e-5
    with pytest.raises(DGHeadsError, match=r"gate values have shape \(4,\); expected \(4, 4\)"):
        heads.add_gates(tiny, learnable=False, values=torch.ones(4))


@torch.no_grad()
@pytest.mark.parametrize("targets", [None, ("q", "v", "o")], ids=["gated_projection", "output_lora"])
def test_a_gate_near_one_acts_under_bf16_autocast(tiny, targets):
    """The gates are folded in fp32: a gate of 1.003 (closer to 1 than bf16's spacing there,
    0.0078) changes the output under bf16 autocast, as it does in the fp32 export; cast to
    bf16 first it acted as exactly 1. Both gating paths: the gated output projection, and the
    gated activations that an output LoRA reads."""
    if targets:
        heads.add_lora(tiny, targets, 2)
        for attn in heads.head_attentions(tiny):
            attn.lora.factors["o_B"].normal_(std=0.05)
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for gate in (1.0, 1.003):
        heads.add_gates(tiny, learnable=False, values=torch.full((4, 4), gate))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(tiny.encode_image(x).float())
    assert not torch.equal(outputs[0], outputs[1])
