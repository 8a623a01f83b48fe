"""TextSpan's decomposition of a CLIP image embedding into direct terms, one per head.

Gandelsman, Efros & Steinhardt, "Interpreting CLIP's Image Representation via Text-Based
Decomposition" (ICLR 2024, arXiv 2310.05916). The CLS token after the last block is a sum of
the terms written into the residual stream: the embeddings (the block-0 input), each block's
attention (a sum over heads of the head's CLS output through its slice of the output
projection, plus the projection's bias) and each block's MLP. The final layer norm is
linearised with the residual stream's own statistics (each term centred over the width and
divided by the final residual's std, per image, times `ln_post`'s weight; its bias is one more
term), and `proj` maps every term into the joint embedding space. The terms then sum to the
model's image embedding (before normalisation): `Decomposition.total()`; a test checks it.

A head's term is what it writes, as the model runs: after any ablation (AAT's mask), through
its gate (HAP), with LoRA's output update if one is on the output projection. Only the CLS
pooled towers (open_clip's ViTs: `pool_type='tok'`, no attentional pooler) decompose this way.
The open_clip internals read here (`ln_post`, `proj`, `ls_1`, `ls_2`, `mlp`) are the ones of
`ResidualAttentionBlock` and `VisionTransformer` in open_clip_torch 3.x (see
`dg_heads.heads.open_clip_vit`, which the rest of the engine goes through).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from dg_heads import heads
from dg_heads.errors import DGHeadsError
from dg_heads.heads import open_clip_vit


@dataclass
class Decomposition:
    """Direct terms of a batch's image embeddings, all float32 in the embedding space."""

    heads: torch.Tensor  # [B, blocks, heads, D]: each head's direct contribution
    other: dict[str, torch.Tensor]  # name -> [B, D]: embeddings, attention biases, MLPs, the final LN's bias
    embedding: torch.Tensor  # [B, D]: the model's image features (before normalisation)

    def total(self) -> torch.Tensor:
        """The sum of all direct terms ([B, D]): equals `embedding` up to float rounding."""
        return self.heads.sum((1, 2)) + sum(self.other.values())


def check_decomposable(model: nn.Module) -> None:
    visual = open_clip_vit.image_tower(model)
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise DGHeadsError(
            f"the atlas decomposes CLS-pooled ViTs (open_clip pool_type 'tok', no attentional pooler); "
            f"this tower pools with {getattr(visual, 'pool_type', '?')!r}"
            f"{' and an attentional pooler' if getattr(visual, 'attn_pool', None) is not None else ''}")


def _layer_scale(module: nn.Module, width: int, like: torch.Tensor) -> torch.Tensor:
    gamma = getattr(module, "gamma", None)
    return torch.ones(width, dtype=like.dtype, device=like.device) if gamma is None else gamma.detach().to(like)


def _out_weight(attn) -> torch.Tensor:
    """The output projection's [D, H*d_h] weight as the forward applies it (LoRA's `o` update added)."""
    weight = attn.out_proj.weight.detach().float()
    lora = attn.lora
    if lora is not None and not attn.lora_merged and "o" in lora.targets:
        weight = weight + lora.delta_weight("o").detach().float()
    return weight


@torch.no_grad()
def decompose(model: nn.Module, images: torch.Tensor, autocast: AbstractContextManager | None = None,
              block_inputs: list[torch.Tensor] | None = None) -> Decomposition:
    """Run the image tower on normalised `images` and split its embedding into direct terms.

    `autocast` (e.g. bf16) is the context the forward runs in; the terms are computed in
    float32 from what that forward recorded. A list as `block_inputs` receives every block's
    input and the last block's output (what `MaskScorer` caches: no second pass for it)."""
    check_decomposable(model)
    visual = open_clip_vit.image_tower(model)
    blocks = open_clip_vit.blocks(model)
    attns = heads.head_attentions(model)
    mlp_out: dict[int, torch.Tensor] = {}
    hooks = [block.ls_2.register_forward_hook(
        lambda _m, _i, out, index=index: mlp_out.__setitem__(index, out[:, 0].float()))
        for index, block in enumerate(blocks)]
    try:
        # every head's output in this forward alone (the scope's record, nothing left on the model)
        with heads.tapping(model) as record, autocast or nullcontext():
            tokens = heads.embed(model, images)
            final = tokens
            for index in range(len(blocks)):
                if block_inputs is not None:
                    block_inputs.append(final)
                final = heads.run_blocks(model, final, index, index + 1)
            if block_inputs is not None:
                block_inputs.append(final)
            embedding = heads.features(model, final)
        taps = [(record[index]["cls"].float(), record[index]["gate"]) for index in range(len(attns))]
    finally:
        for hook in hooks:
            hook.remove()
    residual = final[:, 0].float()  # [B, width]: the CLS token entering ln_post
    width = residual.shape[-1]
    terms: dict[str, torch.Tensor] = {"embeddings": tokens[:, 0].float()}
    per_head = []
    for index, (block, attn, (cls_out, gate)) in enumerate(zip(blocks, attns, taps)):
        scale = _layer_scale(block.ls_1, width, residual)
        if gate is not None:
            cls_out = cls_out * gate.detach().float().to(cls_out.device)[None, :, None]
        weight = _out_weight(attn).view(width, attn.num_heads, attn.head_dim)
        per_head.append(torch.einsum("bhk,whk->bhw", cls_out, weight) * scale)  # [B, H, width]
        terms[f"attention_bias_{index}"] = (attn.out_proj.bias.detach().float() * scale).expand_as(residual)
        terms[f"mlp_{index}"] = mlp_out[index]
    head_terms = torch.stack(per_head, dim=1)  # [B, blocks, H, width]
    ln = visual.ln_post
    std = torch.sqrt(residual.var(dim=-1, unbiased=False) + ln.eps)  # the residual's statistics, per image
    ln_weight = ln.weight.detach().float() if ln.weight is not None else torch.ones(width, device=residual.device)
    proj = visual.proj.detach().float() if visual.proj is not None else torch.eye(width, device=residual.device)

    def direct(term: torch.Tensor) -> torch.Tensor:
        centred = term - term.mean(dim=-1, keepdim=True)
        shape = [std.shape[0]] + [1] * (term.dim() - 1)
        return (centred / std.view(shape) * ln_weight) @ proj

    other = {name: direct(term) for name, term in terms.items()}
    if ln.bias is not None:
        other["ln_post_bias"] = (ln.bias.detach().float() @ proj).expand(residual.shape[0], -1)
    return Decomposition(direct(head_terms), other, embedding.float())
