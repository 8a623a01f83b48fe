"""Per-head gates on head outputs, before the output projection.

HAP's domain-invariant gating: per block `g = H * softmax(theta)`, theta = 0 at init, so every
gate starts at 1 (the model is unchanged) and the gates always sum to H. Soft and shared by
all domains, so they fold into the output projection at export. Fixed gates hold given values.
"""

from __future__ import annotations

import torch
from torch import nn


class HeadGate(nn.Module):
    """Gate values of one block's heads: learnable `H * softmax(theta)` or fixed."""

    def __init__(self, num_heads: int, learnable: bool = True, values: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_heads, self.learnable = num_heads, learnable
        if learnable:
            self.theta = nn.Parameter(torch.zeros(num_heads))
        else:
            fixed = torch.ones(num_heads) if values is None else torch.as_tensor(values, dtype=torch.float32)
            if fixed.shape != (num_heads,):
                raise ValueError(f"gate values need shape ({num_heads},), got {tuple(fixed.shape)}")
            self.register_buffer("fixed", fixed.clone())

    def values(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """The gates; `theta`: other logits than the module's own (a checkpoint's), learnable gates only."""
        if self.learnable:
            theta = self.theta if theta is None else theta
            return self.num_heads * torch.softmax(theta.float(), dim=0)
        return self.fixed

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, learnable={self.learnable}"
