"""`HeadLoRA`: each head's factors and the dense update they make, worked out from the factors by hand."""

import pytest
import torch

from dg_heads.heads import HeadLoRA

D, H = 32, 4


@pytest.mark.parametrize("head_aware", [True, False])
@pytest.mark.parametrize("target", ["q", "k", "v", "o"])
@torch.no_grad()
def test_lora_delta_equals_its_dense_weight_update(target, head_aware):
    lora = HeadLoRA(D, H, rank=3, targets=(target,), head_aware=head_aware, alpha=6.0).double()
    for p in lora.factors.values():
        p.normal_()
    x = torch.randn(5, D, dtype=torch.float64)
    assert lora.scaling == 2.0
    assert torch.allclose(lora.delta(target, x), x @ lora.delta_weight(target).T)


@torch.no_grad()
def test_head_aware_lora_gives_each_head_its_own_factors():
    lora = HeadLoRA(D, H, rank=2, targets=("q",), head_aware=True).double()
    for p in lora.factors.values():
        p.normal_()
    d_h = D // H
    dense = lora.delta_weight("q")
    for h in range(H):  # head h's rows come from B_h A_h alone
        a, b = lora.factors["q_A"][h], lora.factors["q_B"][h]
        assert torch.allclose(dense[h * d_h:(h + 1) * d_h], b @ a)


def test_lora_parameter_counts():
    ha = HeadLoRA(768, 12, rank=8, targets=("q", "v"), head_aware=True)
    plain = HeadLoRA(768, 12, rank=8, targets=("q", "v"), head_aware=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(plain) == 2 * (8 * 768 + 768 * 8)
    assert count(ha) == 2 * (12 * 8 * 768 + 12 * 64 * 8)


@torch.no_grad()
def test_head_aware_output_lora_gives_each_heads_columns_their_own_pair_and_plain_lora_is_b_a():
    """`o` reads the concatenated heads: head h's columns of the update are s * B_h A_h; plain LoRA's
    update is s * B A; a fresh adapter (B = 0) updates nothing."""
    fresh = HeadLoRA(D, H, rank=2, targets=("o", "v"), head_aware=True).double()
    x = torch.randn(3, D, dtype=torch.float64)
    assert not fresh.delta("o", x).any() and not fresh.delta("v", x).any()
    lora = HeadLoRA(D, H, rank=2, targets=("o",), head_aware=True, alpha=1.0).double()
    for p in lora.factors.values():
        p.normal_()
    d_h = D // H
    dense = lora.delta_weight("o")
    for h in range(H):
        a, b = lora.factors["o_A"][h], lora.factors["o_B"][h]  # [r, d_h], [D, r]
        torch.testing.assert_close(dense[:, h * d_h:(h + 1) * d_h], 0.5 * b @ a)  # alpha / r = 1 / 2
    plain = HeadLoRA(D, H, rank=3, targets=("k",), head_aware=False).double()
    for p in plain.factors.values():
        p.normal_()
    a, b = plain.factors["k_A"], plain.factors["k_B"]
    torch.testing.assert_close(plain.delta("k", x), x @ (b @ a).T)  # alpha defaults to r: scaling 1
