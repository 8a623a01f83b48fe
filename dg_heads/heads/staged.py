"""The image tower's forward in stages, so a search can start from a cached block input.

`embed` (patchify, CLS, positions, ln_pre) -> `run_blocks(start)` -> `head` (pool, ln_post,
proj) composes to `visual(images)`; the test suite checks the composition against open_clip.
"""

from __future__ import annotations

import torch
from torch import nn


def embed(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering block 0: [batch, tokens, width] (open_clip's batch-first layout)."""
    return visual._embeds(images)


def run_blocks(visual: nn.Module, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    for block in visual.transformer.resblocks[start:stop]:
        tokens = block(tokens)
    return tokens


def head(visual: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Image features from the last block's tokens (before CLIP's normalisation)."""
    pooled, _ = visual._pool(tokens)
    return pooled @ visual.proj if visual.proj is not None else pooled
