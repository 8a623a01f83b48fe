"""DomainBed's multi-kernel MMD."""

import pytest
import torch

from dg_heads.losses import batched_mmd


def mmd(x, y, gammas=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)):
    """`batched_mmd` of two samples (domains 0 and 1)."""
    domains = torch.cat([torch.zeros(len(x), dtype=torch.long), torch.ones(len(y), dtype=torch.long)])
    return batched_mmd(torch.cat([x, y]), domains, 2, "domainbed", gammas)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_shift():
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randn(256, 8)
    same = mmd(x, y)
    shifted = [mmd(x, y + shift).item() for shift in (0.25, 0.5, 1.0)]
    assert abs(same.item()) < 0.05
    assert same.item() < shifted[0] < shifted[1] < shifted[2]


def test_mmd_matches_the_explicit_formula():
    torch.manual_seed(1)
    x, y = torch.randn(5, 3), torch.randn(7, 3)
    gammas = (0.5, 2.0)

    def k(a, b):
        d = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(torch.exp(-g * d) for g in gammas)

    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert torch.allclose(mmd(x, y, gammas), expected, atol=1e-6)


def test_mmd_is_fp32_under_bf16_autocast():
    """`bf16-mixed` runs the loss under autocast: the MMD must still be the fp32 value (the
    reference is computed in float64 by the explicit formula, outside any autocast)."""
    torch.manual_seed(3)
    x, y = torch.randn(16, 32) * 0.3, torch.randn(16, 32) * 0.3 + 0.05
    gammas = (0.1, 1.0, 10.0)

    def k(a, b):
        d = ((a[:, None].double() - b[None].double()) ** 2).sum(-1)
        return sum(torch.exp(-g * d) for g in gammas)

    expected = (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = mmd(x, y, gammas)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-4)


def _domainbed_mmd(x, y, gammas):
    """DomainBed's `MMD.mmd` with its `gaussian_kernel`, written out in float64."""
    def kernel(a, b):
        d = ((a[:, None] - b[None]) ** 2).sum(-1).clamp_min(1e-30)
        return sum(torch.exp(-g * d) for g in gammas)
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_batched_mmd_equals_domainbeds_formula_per_block_in_float64():
    """All blocks at once, unequal domain sizes, a domain absent from the batch: each block's value
    is DomainBed's penalty (sum over pairs of present domains / number of pairs)."""
    torch.manual_seed(4)
    blocks, sizes, dim = 3, [5, 3, 0, 6], 8
    domains = torch.cat([torch.full((s,), d) for d, s in enumerate(sizes)])
    features = torch.randn(blocks, len(domains), dim, dtype=torch.float64) * 0.4
    features[:, domains == 1] += 0.3
    gammas = (0.01, 1.0, 10.0)
    got = batched_mmd(features, domains, len(sizes), "domainbed", gammas)
    present = [d for d, s in enumerate(sizes) if s]
    for k in range(blocks):
        groups = [features[k, domains == d] for d in present]
        pairs = [_domainbed_mmd(a, b, gammas) for i, a in enumerate(groups) for b in groups[i + 1:]]
        assert got[k].item() == pytest.approx((sum(pairs) / len(pairs)).item(), rel=1e-12, abs=1e-14)


def test_gaussian_kernel_uses_the_median_heuristic():
    torch.manual_seed(5)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64) + 0.5
    both = torch.cat([x, y])
    d = ((both[:, None] - both[None]) ** 2).sum(-1)
    off = d[~torch.eye(13, dtype=torch.bool)]
    bandwidth = off.sort().values[(len(off) - 1) // 2]  # the lower median of the off-diagonal distances

    def kernel(a, b):
        return torch.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / bandwidth)

    expected = kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()
    got = batched_mmd(both, torch.tensor([0] * 6 + [1] * 7), 2, "gaussian")
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
