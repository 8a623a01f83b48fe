"""MMD between domains, as DomainBed computes it.

A sum of Gaussian (RBF) kernels `exp(-gamma * ||x - y||^2)` over a set of bandwidths, the
biased estimator `mean(Kxx) + mean(Kyy) - 2 mean(Kxy)`, averaged over all pairs of domains.
"""

from __future__ import annotations

import itertools

import torch

DOMAINBED_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 via norms and one matmul (DomainBed's `my_cdist`), clamped at 1e-30."""
    x_norm = x.pow(2).sum(dim=-1, keepdim=True)
    y_norm = y.pow(2).sum(dim=-1, keepdim=True)
    return torch.addmm(y_norm.T, x, y.T, alpha=-2).add_(x_norm).clamp_min_(1e-30)


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, gammas: tuple[float, ...] = DOMAINBED_GAMMAS) -> torch.Tensor:
    d = squared_distances(x, y)
    return sum(torch.exp(-gamma * d) for gamma in gammas)


def mmd(x: torch.Tensor, y: torch.Tensor, gammas: tuple[float, ...] = DOMAINBED_GAMMAS) -> torch.Tensor:
    """Biased MMD^2 estimate between samples x [n, f] and y [m, f], in fp32 whatever the precision.

    Kernels of bf16 distances lose too much, and a `.float()` alone does not keep them fp32:
    under autocast (`bf16-mixed`) `addmm` is cast back to bf16, so the computation leaves autocast."""
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.float(), y.float()
        return (rbf_kernel(x, x, gammas).mean() + rbf_kernel(y, y, gammas).mean()
                - 2 * rbf_kernel(x, y, gammas).mean())


def multi_domain_mmd(features: torch.Tensor, domains: torch.Tensor,
                     gammas: tuple[float, ...] = DOMAINBED_GAMMAS) -> torch.Tensor:
    """Mean MMD over all pairs of the domains present in a batch (features [n, f], domains [n])."""
    present = torch.unique(domains).tolist()
    if len(present) < 2:
        raise ValueError(f"MMD needs samples of at least 2 domains in a batch, got domains {present}")
    groups = [features[domains == d] for d in present]
    pairs = [mmd(a, b, gammas) for a, b in itertools.combinations(groups, 2)]
    return torch.stack(pairs).mean()
