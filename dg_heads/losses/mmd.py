"""MMD between domains, as DomainBed computes it, for many feature sets in one computation.

DomainBed's estimator: a sum of Gaussian (RBF) kernels `exp(-gamma * ||x - y||^2)` over a set of
bandwidths, the biased estimate `mean(Kxx) + mean(Kyy) - 2 mean(Kxy)`, averaged over all pairs of
domains. `kernel="gaussian"` instead uses one Gaussian kernel `exp(-||x - y||^2 / h)` whose
bandwidth `h` is the median squared distance between the batch's samples (the median heuristic,
detached): the HAP paper names "the Gaussian kernel" without a bandwidth.

`batched_mmd` takes `[K, n, f]` features (e.g. one feature set per gated block) and the domain
of every sample, and computes every set's MMD at once: one batched Gram matrix, the bandwidths
broadcast, the per-domain-pair kernel means as one-hot products. Nothing in it reads a value on
the host, so a training step stays free of synchronisation. It always runs in fp32 (fp64 inputs
stay fp64): kernels of bf16 distances lose too much, and under autocast a `.float()` alone does
not keep a matmul in fp32, so it leaves autocast.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

DOMAINBED_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
Kernel = Literal["domainbed", "gaussian"]
KERNELS: tuple[str, ...] = get_args(Kernel)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 via norms and one (batched) matmul (DomainBed's `my_cdist`), clamped at 1e-30."""
    x_norm = x.pow(2).sum(dim=-1, keepdim=True)
    y_norm = y.pow(2).sum(dim=-1, keepdim=True)
    return (x_norm + y_norm.transpose(-2, -1) - 2 * x @ y.transpose(-2, -1)).clamp_min(1e-30)


def kernel_matrix(d: torch.Tensor, kernel: Kernel = "domainbed",
                  gammas: tuple[float, ...] | torch.Tensor = DOMAINBED_GAMMAS) -> torch.Tensor:
    """Kernel values from squared distances `d` [..., n, m] (for `gaussian`, a square `d`).

    `gammas` may be a tensor already on `d`'s device (a module buffer): a tuple is copied to the
    device on every call, which on a GPU is a blocking host-to-device copy."""
    if kernel == "domainbed":
        gamma = gammas if isinstance(gammas, torch.Tensor) else torch.tensor(gammas, dtype=torch.float64)
        gamma = gamma.to(device=d.device, dtype=d.dtype).view(-1, *([1] * d.dim()))
        return torch.exp(-gamma * d).sum(0)
    if kernel == "gaussian":
        n = d.shape[-1]
        flat = d.detach().flatten(-2)
        # the n diagonal zeros are the n smallest entries: the lower median of the n(n-1)
        # off-diagonal distances is order statistic n + (n(n-1) - 1) // 2 + 1 (1-based), static
        k = min(flat.shape[-1], n + (n * (n - 1) - 1) // 2 + 1)
        bandwidth = flat.kthvalue(k, dim=-1).values.clamp_min(1e-12)
        return torch.exp(-d / bandwidth[..., None, None])
    raise ValueError(f"MMD kernel {kernel!r} is not one of {KERNELS}")


def batched_mmd(features: torch.Tensor, domains: torch.Tensor, num_domains: int, kernel: Kernel = "domainbed",
                gammas: tuple[float, ...] | torch.Tensor = DOMAINBED_GAMMAS) -> torch.Tensor:
    """Mean MMD over all pairs of domains present, for each of K feature sets: features [K, n, f]
    (or [n, f]), domains [n] in [0, num_domains) -> [K] (or a scalar)."""
    single = features.dim() == 2
    x = features[None] if single else features
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        k = kernel_matrix(squared_distances(x, x), kernel, gammas)  # [K, n, n]
        # [n, D] one-hot membership (F.one_hot checks its input's range on the host: a sync)
        member = (domains[:, None] == torch.arange(num_domains, device=domains.device)).to(k.dtype)
        count = member.sum(0)  # [D]
        sums = member.T @ k @ member  # [K, D, D]: kernel sums over each pair of domains
        means = sums / (count[:, None] * count[None, :]).clamp_min(1)
        within = means.diagonal(dim1=-2, dim2=-1)  # [K, D]
        pair_mmd = within[:, :, None] + within[:, None, :] - 2 * means  # [K, D, D]
        present = count > 0
        pairs = torch.ones(num_domains, num_domains, dtype=torch.bool, device=x.device).triu(1)
        pairs = (pairs & present[:, None] & present[None, :]).to(k.dtype)
        value = (pair_mmd * pairs).sum((-2, -1)) / pairs.sum().clamp_min(1)
    return value[0] if single else value
