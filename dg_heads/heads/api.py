"""The public head-level API over an open_clip model's image tower.

    model = dg_heads.heads.convert(open_clip.create_model("ViT-B-16"))
    dg_heads.heads.add_lora(model, targets=("q", "v"), ranks=[2] * 10 + [8, 8])
    dg_heads.heads.add_gates(model)
    dg_heads.heads.ablate(model, {11: [3], 10: [10, 11]}, mode="zero")
    plain = dg_heads.heads.export(model)   # a plain open_clip model, same outputs

Bad block or head indices, targets and rank lists raise `DGHeadsError` naming the value and
the valid range.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from dg_heads.errors import DGHeadsError
from dg_heads.heads.attention import ABLATION_MODES, HeadAttention
from dg_heads.heads.gates import HeadGate
from dg_heads.heads.lora import TARGETS, HeadLoRA


def _vit_blocks(model: nn.Module) -> list[nn.Module]:
    visual = getattr(model, "visual", model)
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or not all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
        raise DGHeadsError(
            f"{type(visual).__name__} is not an open_clip ViT image tower with nn.MultiheadAttention "
            f"blocks (timm and ResNet towers are not supported)"
        )
    return list(blocks)


def convert(model: nn.Module) -> nn.Module:
    """Make every attention of the image tower a `HeadAttention`, in place; returns `model`.

    The modules are adopted, not copied: parameters, state-dict keys and outputs are unchanged.
    """
    for block in _vit_blocks(model):
        if not isinstance(block.attn, HeadAttention):
            HeadAttention.adopt(block.attn)
    return model


def head_attentions(model: nn.Module) -> list[HeadAttention]:
    """The converted attention modules in block order (each has `num_heads` and `head_dim`)."""
    attns = [block.attn for block in _vit_blocks(model)]
    if not all(isinstance(a, HeadAttention) for a in attns):
        raise DGHeadsError("the image tower is not converted: call dg_heads.heads.convert(model) first")
    return attns


def _blocks_arg(attns: list[HeadAttention], blocks: Iterable[int] | None) -> list[int]:
    chosen = list(range(len(attns))) if blocks is None else [int(b) for b in blocks]
    for b in chosen:
        if not 0 <= b < len(attns):
            raise DGHeadsError(f"block {b} does not exist: the image tower has blocks 0..{len(attns) - 1}")
    return chosen


def validate_mask(model: nn.Module, mask: Mapping[int | str, Sequence[int]]) -> dict[int, list[int]]:
    """`{block: [heads]}` with int keys, every index checked against the model."""
    attns = head_attentions(model)
    clean: dict[int, list[int]] = {}
    for block_key, heads in mask.items():
        try:
            block = int(block_key)
        except (TypeError, ValueError):
            raise DGHeadsError(f"block {block_key!r} is not an integer block index") from None
        _blocks_arg(attns, [block])
        num_heads = attns[block].num_heads
        for head in heads:
            if not 0 <= int(head) < num_heads:
                raise DGHeadsError(f"head {head} of block {block} does not exist: heads are 0..{num_heads - 1}")
        clean[block] = sorted({int(h) for h in heads})
    return clean


def ablate(model: nn.Module, mask: Mapping[int | str, Sequence[int]], mode: str = "zero",
           alpha: float = 0.0) -> nn.Module:
    """Ablate the heads of `mask` (`{block_index: [head_index, ...]}`) by editing their attention
    weights (`zero`, `identity`, `uniform`, or `scale` by `alpha`); replaces any earlier ablation."""
    if mode not in ABLATION_MODES:
        raise DGHeadsError(f"ablation mode {mode!r} is not one of {ABLATION_MODES}")
    clean = validate_mask(model, mask)
    clear_ablation(model)
    for block, heads in clean.items():
        if heads:
            attn = head_attentions(model)[block]
            strength = torch.zeros(attn.num_heads, device=attn.in_proj_weight.device)
            strength[heads] = 1.0
            attn.set_ablation(mode, strength, alpha)
    return model


def clear_ablation(model: nn.Module) -> nn.Module:
    for attn in head_attentions(model):
        attn.clear_ablation()
    return model


def ablation_mask(model: nn.Module) -> dict[int, list[int]]:
    """The heads currently ablated (strength > 0), as `{block: [heads]}`."""
    mask = {}
    for block, attn in enumerate(head_attentions(model)):
        if attn.ablation_strength is not None and bool((attn.ablation_strength > 0).any()):
            mask[block] = torch.nonzero(attn.ablation_strength > 0).flatten().tolist()
    return mask


def add_lora(model: nn.Module, targets: Sequence[str] = ("q", "v"), ranks: int | Sequence[int] = 8,
             head_aware: bool = True, alpha: float | None = None) -> list[HeadLoRA | None]:
    """Attach LoRA to every block (rank 0 skips a block); `ranks` is one int or one per block."""
    attns = head_attentions(model)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise DGHeadsError(f"LoRA targets {list(targets)}: {bad or 'none given'}; expected a subset of {list(TARGETS)}")
    per_block = [int(ranks)] * len(attns) if isinstance(ranks, int) else [int(r) for r in ranks]
    if len(per_block) != len(attns):
        raise DGHeadsError(f"LoRA ranks {per_block} has {len(per_block)} entries; expected one per block of the "
                           f"image tower ({len(attns)} blocks) or one int")
    if any(r < 0 for r in per_block):
        raise DGHeadsError(f"LoRA ranks {per_block} must be >= 0")
    for attn, rank in zip(attns, per_block):
        attn.lora = None
        if rank > 0:
            lora = HeadLoRA(attn.embed_dim, attn.num_heads, rank, tuple(targets), head_aware, alpha)
            attn.lora = lora.to(attn.in_proj_weight.device)
    return [a.lora for a in attns]


def add_gates(model: nn.Module, blocks: Iterable[int] | None = None, learnable: bool = True,
              values: torch.Tensor | None = None) -> list[HeadGate]:
    """Gates on the head outputs of the chosen blocks: learnable `H * softmax(theta)` (identity at
    init), or fixed (`learnable=False`) at `values` ([blocks, heads] for the whole tower; default 1)."""
    attns = head_attentions(model)
    if values is not None and tuple(values.shape) != (len(attns), attns[0].num_heads):
        raise DGHeadsError(f"gate values have shape {tuple(values.shape)}; expected {(len(attns), attns[0].num_heads)}")
    gates = []
    for b in _blocks_arg(attns, blocks):
        row = None if values is None else values[b]
        attns[b].gate = HeadGate(attns[b].num_heads, learnable, row).to(attns[b].in_proj_weight.device)
        gates.append(attns[b].gate)
    return gates


def gate_values(model: nn.Module) -> torch.Tensor:
    """[blocks, heads] gate values (1 where a block has no gate)."""
    rows = [a.gate.values().detach() if a.gate is not None else torch.ones(a.num_heads)
            for a in head_attentions(model)]
    return torch.stack([r.float().cpu() for r in rows])


def set_taps(model: nn.Module, enabled: bool = True, blocks: Iterable[int] | None = None) -> None:
    """Record each head's output (after ablation, before its gate; CLS token and token mean) of
    the chosen blocks in every forward, inside the autograd graph."""
    attns = head_attentions(model)
    for b in _blocks_arg(attns, blocks):
        attns[b].tap_enabled = enabled
        attns[b].tap = {}


def taps(model: nn.Module, kind: str = "cls") -> dict[int, torch.Tensor]:
    """`{block: [batch, heads, head_dim]}` recorded by the last forward (`kind`: cls or mean)."""
    return {b: a.tap[kind] for b, a in enumerate(head_attentions(model)) if a.tap_enabled and a.tap}


def merge_lora(model: nn.Module) -> None:
    for attn in head_attentions(model):
        attn.merge_lora()


def unmerge_lora(model: nn.Module) -> None:
    for attn in head_attentions(model):
        attn.unmerge_lora()


def export(model: nn.Module) -> nn.Module:
    """A plain open_clip model (native `nn.MultiheadAttention` everywhere) with LoRA merged and
    gates, zero- and scale-ablations folded into the output projections: the same outputs,
    no runtime overhead. Identity/uniform ablations cannot be folded and raise instead."""
    try:
        folded = [attn.folded_weights() for attn in head_attentions(model)]
    except ValueError as error:
        raise DGHeadsError(f"cannot export: {error}") from None
    plain = copy.deepcopy(model)
    for block, weights in zip(_vit_blocks(plain), folded):
        old = block.attn
        native = nn.MultiheadAttention(old.embed_dim, old.num_heads, dropout=old.dropout,
                                       batch_first=old.batch_first, device=old.in_proj_weight.device,
                                       dtype=old.in_proj_weight.dtype)
        native.load_state_dict(weights)
        block.attn = native
    return plain


def save_export(model: nn.Module, path: str | Path) -> Path:
    """Export and save a state dict that `open_clip.create_model(name, pretrained=path)` loads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export(model).state_dict(), path)
    return path
