"""What the atlas measures for every (block, head), from the direct terms of a sample of images.

Class relevance:
  head_accuracy      zero-shot accuracy of the head's direct contribution alone against the
                     class prompts (TextSpan's per-head view);
  mean_ablation      accuracy lost when the head's direct contribution is replaced by its mean
                     over the sample (TextSpan's mean ablation);
  zero_ablation      accuracy lost when the head's attention weights are zeroed (AAT's ablation,
                     through every later block: `MaskScorer`).
Domain specificity:
  domain_mmd         MMD between the source domains of the head's direct contribution: HAP's
                     estimator (`dg_heads.losses.batched_mmd`, DomainBed's 7 RBF kernels),
                     mean over pairs of domains;
  domain_probe       balanced held-out accuracy of a linear probe that tells the domains apart
                     from the head's direct contribution (every other image trains it).
Every accuracy is the mean over domains of the per-domain accuracy.

Several processes: each decomposes its share of the images; `gather` brings every share to
every process in the order of the images' ids, so every measure above is computed on the same
whole sample, equal to one process's (MaskScorer sums its per-domain counts over processes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.heads import HeadMask
from dg_heads.losses import DOMAINBED_GAMMAS, batched_mmd
from dg_heads.methods.aat.scorer import MaskScorer

MEASURES = {  # name -> (title, what it means), in the page's order
    "head_accuracy": ("zero-shot accuracy of the head alone",
                      "the head's direct contribution alone, classified against the class prompts"),
    "mean_ablation": ("accuracy lost, mean-ablated (TextSpan)",
                      "the head's direct contribution replaced by its mean over the sample"),
    "zero_ablation": ("accuracy lost, zero-ablated (AAT)",
                      "the head's attention weights set to zero, effect through all later blocks"),
    "domain_mmd": ("domain MMD (HAP's estimator)",
                   "MMD between source domains of the head's direct contribution"),
    "domain_probe": ("domain probe accuracy",
                     "held-out accuracy of a linear probe telling the domains apart from the contribution"),
    "contribution_norm": ("contribution norm", "mean L2 norm of the head's direct contribution"),
}
METHOD_VIEWS = {
    "gate": ("HAP gate value", "the head's gate (1 = untouched, 0 = closed)"),
    "aat_mask": ("AAT mask", "1 where the method ablates the head"),
    "bp_strength": ("AAT BP strength", "learned ablation strength sigmoid(logit)"),
    "lora_norm": ("LoRA update norm", "Frobenius norm of the LoRA update of the head's rows/columns"),
}


@dataclass
class Sample:
    """The whole sample's direct terms (every process's share, ordered by image id)."""

    contributions: torch.Tensor  # [N, blocks, heads, D]
    embedding: torch.Tensor  # [N, D]
    labels: torch.Tensor  # [N]
    domains: torch.Tensor  # [N]
    ids: torch.Tensor  # [N]


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every process's `parts` (CPU tensors with a leading sample axis and an `ids` entry),
    concatenated and ordered by id: what one process holding every image would have."""
    if world()[1] > 1:
        shares: list = [None] * world()[1]
        dist.all_gather_object(shares, {k: v.cpu() for k, v in parts.items()})
        parts = {k: torch.cat([s[k] for s in shares]) for k in parts}
    order = torch.argsort(parts["ids"])
    return {k: v[order] for k, v in parts.items()}


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a gloo group reduces CPU tensors, NCCL the device's)."""
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def domain_accuracy(correct: torch.Tensor, domains: torch.Tensor, num_domains: int) -> torch.Tensor:
    """Mean over the domains present of each domain's accuracy; `correct` is [N, ...] bool."""
    member = F.one_hot(domains, num_domains).to(torch.float64)  # [N, D]
    hits = torch.einsum("nd,n...->d...", member, correct.to(torch.float64))
    count = member.sum(0)
    present = count > 0
    shape = [-1] + [1] * (correct.dim() - 1)
    return (hits[present] / count[present].view(shape)).mean(0).float()


def head_accuracy(sample: Sample, text: torch.Tensor, num_domains: int) -> torch.Tensor:
    """[blocks, heads]: zero-shot accuracy of each head's contribution alone."""
    logits = sample.contributions @ text.T  # [N, L, H, C]
    return domain_accuracy(logits.argmax(-1) == sample.labels[:, None, None], sample.domains, num_domains)


def base_accuracy(sample: Sample, text: torch.Tensor, num_domains: int) -> float:
    logits = F.normalize(sample.embedding, dim=-1) @ text.T
    return float(domain_accuracy(logits.argmax(-1) == sample.labels, sample.domains, num_domains))


def mean_ablation(sample: Sample, text: torch.Tensor, num_domains: int) -> torch.Tensor:
    """[blocks, heads]: accuracy lost when a head's direct contribution is replaced by its mean."""
    c = sample.contributions
    ablated = sample.embedding[:, None, None] - c + c.mean(0, keepdim=True)  # [N, L, H, D]
    logits = F.normalize(ablated, dim=-1) @ text.T
    accuracy = domain_accuracy(logits.argmax(-1) == sample.labels[:, None, None], sample.domains, num_domains)
    return base_accuracy(sample, text, num_domains) - accuracy


def domain_mmd(sample: Sample, num_domains: int, gammas=DOMAINBED_GAMMAS) -> torch.Tensor:
    """[blocks, heads]: HAP's MMD between source domains of each head's contribution (NaN with one domain)."""
    n, blocks, num_heads, width = sample.contributions.shape
    if len(torch.unique(sample.domains)) < 2:
        return torch.full((blocks, num_heads), math.nan)
    rows = []
    for block in range(blocks):  # one block's heads per batched computation: [H, n, n] Gram matrices
        features = sample.contributions[:, block].transpose(0, 1)  # [H, n, D]
        rows.append(batched_mmd(features, sample.domains, num_domains, "domainbed", gammas))
    return torch.stack(rows).float()


def domain_probe(sample: Sample, num_domains: int, steps: int = 150, weight_decay: float = 1e-3,
                 seed: int = 0) -> torch.Tensor:
    """[blocks, heads]: balanced accuracy, on every other image of each domain, of a linear probe
    (multinomial logistic regression, full-batch Adam) trained on the rest to tell the domains
    apart from a head's contribution; all heads' probes train at once. NaN with one domain."""
    n, blocks, num_heads, width = sample.contributions.shape
    if len(torch.unique(sample.domains)) < 2:
        return torch.full((blocks, num_heads), math.nan)
    x = sample.contributions.reshape(n, blocks * num_heads, width).transpose(0, 1)  # [K, n, D]
    position = torch.zeros(n, dtype=torch.long)  # each image's place among its domain's images
    for domain in torch.unique(sample.domains):
        members = torch.nonzero(sample.domains == domain).flatten()
        position[members] = torch.arange(len(members))
    train = position % 2 == 0
    held = ~train if bool((~train).any()) else train
    mean, std = x[:, train].mean(1, keepdim=True), x[:, train].std(1, keepdim=True).clamp_min(1e-6)
    x = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(x.shape[0], width, num_domains, generator=generator) * 0.01).requires_grad_(True)
    bias = torch.zeros(x.shape[0], 1, num_domains, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    target = sample.domains[train]
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            logits = x[:, train] @ weight + bias  # [K, n_train, domains]
            loss = F.cross_entropy(logits.reshape(-1, num_domains), target.repeat(x.shape[0]), reduction="sum")
            (loss / train.sum() + weight_decay * weight.pow(2).sum()).backward()
            optimizer.step()
    with torch.no_grad():
        predicted = (x[:, held] @ weight + bias).argmax(-1)  # [K, n_held]
    correct = (predicted == sample.domains[held]).T  # [n_held, K]
    return domain_accuracy(correct, sample.domains[held], num_domains).view(blocks, num_heads)


def zero_ablation(scorer: MaskScorer, base_mask: HeadMask, blocks: list[int]) -> tuple[torch.Tensor, float]:
    """[blocks, heads] accuracy lost when each head of `blocks` is zero-ablated through its
    attention weights on top of `base_mask` (the method's own, if any; NaN for the other
    blocks), and the accuracy with `base_mask` alone."""
    num_blocks, num_heads = scorer.grid
    lost = torch.full((num_blocks, num_heads), math.nan)
    base = scorer.score(base_mask)
    for block in blocks:
        for head in range(num_heads):
            mask = HeadMask(base_mask.pairs | {(block, head)})
            lost[block, head] = base - scorer.score(mask)
    return lost, base


def lora_norms(model: torch.nn.Module) -> torch.Tensor | None:
    """[blocks, heads]: the norm of LoRA's update of each head's q/k/v rows and output columns."""
    attns = heads.head_attentions(model)
    if all(a.lora is None for a in attns):
        return None
    rows = []
    for attn in attns:
        norms = torch.zeros(attn.num_heads)
        if attn.lora is not None:
            for target in attn.lora.targets:
                delta = attn.lora.delta_weight(target).detach().float().cpu()
                per_head = (delta.view(attn.num_heads, attn.head_dim, -1) if target != "o"
                            else delta.view(-1, attn.num_heads, attn.head_dim).transpose(0, 1))
                norms += per_head.pow(2).sum((1, 2))
        rows.append(norms.sqrt())
    return torch.stack(rows)


def method_views(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The method's own per-head state: HAP's gates, AAT's mask and BP strengths, LoRA norms."""
    model = module.clip
    views: dict[str, torch.Tensor] = {}
    if any(a.gate is not None for a in heads.head_attentions(model)):
        views["gate"] = heads.gate_values(model)
    mask = getattr(module, "mask", None)
    if isinstance(mask, HeadMask) and hasattr(module, "search_spec"):
        views["aat_mask"] = mask.to_tensor(heads.head_grid(model))
    logits = getattr(module, "ablation_logits", None)
    if logits is not None:
        views["bp_strength"] = torch.sigmoid(logits.detach().float().cpu())
    norms = lora_norms(model)
    if norms is not None:
        views["lora_norm"] = norms
    return views


def suppression(views: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor] | None:
    """What the method turns down, per head (higher: more suppressed), and from which view."""
    if "gate" in views:
        return "1 - gate", 1 - views["gate"]
    if "bp_strength" in views:
        return "BP strength", views["bp_strength"]
    if "aat_mask" in views and views["aat_mask"].any():
        return "AAT mask", views["aat_mask"]
    return None


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two same-shaped tensors (NaN entries left out; ties: mean ranks)."""
    a, b = a.flatten().double(), b.flatten().double()
    keep = ~(torch.isnan(a) | torch.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return math.nan

    def ranks(v: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(v)
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=v.dtype)
        for value in torch.unique(v):  # ties share their mean rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = ra.norm() * rb.norm()
    return float((ra * rb).sum() / denominator) if denominator > 0 else math.nan
