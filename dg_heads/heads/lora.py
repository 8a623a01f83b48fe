"""Per-head LoRA on the q, k, v and output projections of one attention block.

Head-aware (the HAP paper's HA-LoRA): head h of projection P in {q, k, v} gets its own
`A_h` in R^{r x d} and `B_h` in R^{d_h x r}, so `W_P^h <- W_P^h + s * B_h A_h`, s = alpha / r.
Plain LoRA: one `A` in R^{r x d} shared by the heads of a projection and `B` in R^{d x r}.
For the output projection (whose input is the concatenated heads) head-aware means head h's
columns get their own pair: `A_h` in R^{r x d_h}, `B_h` in R^{d x r}. `B` is zero at init, so
a fresh adapter changes nothing; `A` is Kaiming-uniform as in peft. Whether the update is
merged into the base weights is the attention module's state (`HeadAttention.lora_merged`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("q", "k", "v", "o")


def _kaiming_(tensor: torch.Tensor) -> torch.Tensor:
    """peft's init of A (`kaiming_uniform_(a=sqrt(5))`), per head for a stacked [H, r, in] tensor."""
    for matrix in tensor.view(-1, *tensor.shape[-2:]):
        nn.init.kaiming_uniform_(matrix, a=math.sqrt(5))
    return tensor


class HeadLoRA(nn.Module):
    """LoRA factors of one block; `delta(target, x)` is the update of that projection's output."""

    def __init__(self, embed_dim: int, num_heads: int, rank: int, targets: tuple[str, ...],
                 head_aware: bool = True, alpha: float | None = None) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.rank, self.targets, self.head_aware = rank, tuple(targets), head_aware
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.factors = nn.ParameterDict()
        for target in self.targets:
            a_shape, b_shape = self._shapes(target)
            self.factors[f"{target}_A"] = nn.Parameter(_kaiming_(torch.empty(a_shape)))
            self.factors[f"{target}_B"] = nn.Parameter(torch.zeros(b_shape))

    def _shapes(self, target: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        d, h, dh, r = self.embed_dim, self.num_heads, self.head_dim, self.rank
        if not self.head_aware:
            return (r, d), (d, r)
        if target == "o":
            return (h, r, dh), (h, d, r)
        return (h, r, d), (h, dh, r)

    def delta(self, target: str, x: torch.Tensor) -> torch.Tensor:
        """`s * x (B A)^T` for one target, computed low-rank: x is [..., d] (for `o`: the
        concatenated head outputs [..., d]).

        Head-aware LoRA is LoRA of rank H*r with a block-diagonal factor, so it runs as two
        plain matmuls (`block_diag` of the per-head factors is [d, H*r], tiny) and stores no
        per-head intermediates: the same activation memory as plain LoRA of rank H*r.
        """
        a, b = self.factors[f"{target}_A"], self.factors[f"{target}_B"]
        a, b = a.to(x.dtype), b.to(x.dtype)
        if not self.head_aware:
            return self.scaling * (x @ a.T @ b.T)
        h, r = self.num_heads, self.rank
        if target == "o":  # A_h reads head h's slice: block-diagonal A; each B_h writes every output
            return self.scaling * ((x @ torch.block_diag(*a).T) @ b.permute(1, 0, 2).reshape(self.embed_dim, h * r).T)
        return self.scaling * ((x @ a.reshape(h * r, -1).T) @ torch.block_diag(*b).T)

    def delta_weight(self, target: str) -> torch.Tensor:
        """The dense [d, d] update `s * B A` of a projection's weight, for merging and export."""
        a, b = self.factors[f"{target}_A"], self.factors[f"{target}_B"]
        if not self.head_aware:
            return self.scaling * b @ a
        per_head = torch.bmm(b, a)  # q/k/v: [H, d_h, d] (rows of head h); o: [H, d, d_h] (its columns)
        if target == "o":
            return self.scaling * per_head.permute(1, 0, 2).reshape(self.embed_dim, self.embed_dim)
        return self.scaling * per_head.reshape(self.embed_dim, self.embed_dim)

    def extra_repr(self) -> str:
        kind = "head-aware" if self.head_aware else "plain"
        return f"{kind}, rank={self.rank}, targets={self.targets}, scaling={self.scaling:g}"
