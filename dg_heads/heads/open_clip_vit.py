"""Everything the head engine knows about open_clip's ViT image tower, in one place.

The engine reads open_clip's structure (`visual.transformer.resblocks[i].attn`), calls two of
its private hooks (`VisionTransformer._embeds` and `._pool`, for a forward that starts at a
cached block input) and swaps the class of its `nn.MultiheadAttention` modules in place. All
three are open_clip internals that a release may change, so nothing else in dg-heads touches
them: the rest of the engine and every method go through the functions here.

Supported: `SUPPORTED_OPEN_CLIP` (pyproject.toml declares the same range; a test compares them
with the installed version). open_clip's main branch (4.x) replaces `nn.MultiheadAttention` in
its ViT blocks with its own attention module: such a tower is refused with a `DGHeadsError`
naming the block and the module found, never converted half-way.
"""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from dg_heads.errors import DGHeadsError

SUPPORTED_OPEN_CLIP = ">=3.0,<4"  # the range of open_clip_torch in pyproject.toml


def _tower_name(model: nn.Module) -> str:
    return type(getattr(model, "visual", model)).__name__


def image_tower(model: nn.Module) -> nn.Module:
    """open_clip's `model.visual` (or `model` itself when given the tower)."""
    return getattr(model, "visual", model)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of the ViT image tower, each checked to hold an `nn.MultiheadAttention`
    (a converted `HeadAttention` is one) as `attn`."""
    visual = image_tower(model)
    found = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if found is None:
        raise DGHeadsError(
            f"{type(visual).__name__} is not an open_clip ViT image tower (no transformer.resblocks); "
            f"timm and ResNet towers are not supported"
        )
    for index, block in enumerate(found):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention):
            raise DGHeadsError(
                f"block {index} of the {type(visual).__name__} has attention {type(attn).__name__}, not "
                f"torch.nn.MultiheadAttention: the head engine converts open_clip_torch{SUPPORTED_OPEN_CLIP} "
                f"ViTs (installed: {open_clip.__version__}); open_clip's main branch (4.x) replaced the "
                f"attention module and is not supported"
            )
    return list(found)


def adopt(attn: nn.MultiheadAttention, cls: type) -> nn.MultiheadAttention:
    """Turn open_clip's native attention into `cls` (a subclass) in place: the same object, the
    same parameters and state-dict keys. `cls._init_controls()` sets up its own state."""
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.in_proj_weight is None:
        raise DGHeadsError("only self-attention with a fused in_proj (open_clip's ViT blocks) can be converted")
    attn.__class__ = cls
    attn._init_controls()
    return attn


def native(weights: dict[str, torch.Tensor], like: nn.MultiheadAttention) -> nn.MultiheadAttention:
    """A plain `nn.MultiheadAttention` shaped like `like`, holding `weights` (for export)."""
    plain = nn.MultiheadAttention(like.embed_dim, like.num_heads, dropout=like.dropout,
                                  batch_first=like.batch_first, device=like.in_proj_weight.device,
                                  dtype=like.in_proj_weight.dtype)
    plain.load_state_dict(weights)
    return plain


def replace_attention(model: nn.Module, modules: list[nn.Module]) -> None:
    """Put `modules[i]` in place of block i's attention."""
    for block, module in zip(blocks(model), modules):
        block.attn = module


# ------------------------------------------------------- a forward in stages
# `embed` -> `run_blocks(start)` -> `features` composes to `model.visual(images)` (a test checks
# it against open_clip), so a search can start from a cached block input.


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering block 0: [batch, tokens, width] (open_clip's batch-first layout)."""
    return image_tower(model)._embeds(images)


def run_blocks(model: nn.Module, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    for block in blocks(model)[start:stop]:
        tokens = block(tokens)
    return tokens


def features(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Image features from the last block's tokens (before CLIP's normalisation)."""
    visual = image_tower(model)
    pooled, _ = visual._pool(tokens)
    return pooled @ visual.proj if visual.proj is not None else pooled
