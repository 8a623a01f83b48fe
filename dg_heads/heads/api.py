"""The public head-level API over an open_clip model's image tower.

    model = dg_heads.heads.convert(open_clip.create_model("ViT-B-16"))
    dg_heads.heads.add_lora(model, targets=("q", "v"), ranks=[2] * 10 + [8, 8])
    dg_heads.heads.add_gates(model)
    dg_heads.heads.ablate(model, {11: [3], 10: [10, 11]}, mode="zero")   # or a HeadMask
    plain = dg_heads.heads.export(model)   # a plain open_clip model, same outputs

Bad block or head indices, targets and rank lists raise `DGHeadsError` naming the value and
the valid range. Everything open_clip-specific lives in `open_clip_vit`; a search that runs the
tower in stages uses `embed` -> `run_blocks` -> `features` from here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from dg_heads.errors import DGHeadsError
from dg_heads.heads import open_clip_vit
from dg_heads.heads.attention import ABLATION_MODES, HeadAttention, HeadTap, TapSink
from dg_heads.heads.gates import HeadGate
from dg_heads.heads.lora import TARGETS, HeadLoRA
from dg_heads.heads.mask import HeadMask


def convert(model: nn.Module) -> nn.Module:
    """Make every attention of the image tower a `HeadAttention`, in place; returns `model`.

    The modules are adopted, not copied: parameters, state-dict keys and outputs are unchanged.
    A tower whose blocks do not all hold an `nn.MultiheadAttention` is refused before any is
    converted (`open_clip_vit.blocks`).
    """
    for block in open_clip_vit.blocks(model):
        if not isinstance(block.attn, HeadAttention):
            open_clip_vit.adopt(block.attn, HeadAttention)
    return model


def head_attentions(model: nn.Module) -> list[HeadAttention]:
    """The converted attention modules in block order (each has `num_heads` and `head_dim`)."""
    attns = [block.attn for block in open_clip_vit.blocks(model)]
    if not all(isinstance(a, HeadAttention) for a in attns):
        raise DGHeadsError("the image tower is not converted: call dg_heads.heads.convert(model) first")
    return attns


def _blocks_arg(attns: list[HeadAttention], blocks: Iterable[int] | None) -> list[int]:
    chosen = list(range(len(attns))) if blocks is None else [int(b) for b in blocks]
    for b in chosen:
        if not 0 <= b < len(attns):
            raise DGHeadsError(f"block {b} does not exist: the image tower has blocks 0..{len(attns) - 1}")
    return chosen


def head_grid(model: nn.Module) -> tuple[int, int]:
    """(blocks, heads per block) of the converted image tower."""
    attns = head_attentions(model)
    return len(attns), attns[0].num_heads


def validate_mask(model: nn.Module, mask: HeadMask | Mapping[int | str, Sequence[int]] | None) -> HeadMask:
    """`mask` as a `HeadMask`, every block and head index checked against the model."""
    return HeadMask.of(mask).check([a.num_heads for a in head_attentions(model)])


def ablate(model: nn.Module, mask: HeadMask | Mapping[int | str, Sequence[int]], mode: str = "zero",
           alpha: float = 0.0) -> nn.Module:
    """Ablate the heads of `mask` (a `HeadMask`, or `{block_index: [head_index, ...]}`) by editing
    their attention weights (`zero`, `identity`, `uniform`, or `scale` by `alpha`); replaces any
    earlier ablation."""
    if mode not in ABLATION_MODES:
        raise DGHeadsError(f"ablation mode {mode!r} is not one of {ABLATION_MODES}")
    clean = validate_mask(model, mask)
    clear_ablation(model)
    attns = head_attentions(model)
    for block, heads in clean.to_dict().items():
        strength = torch.zeros(attns[block].num_heads, device=attns[block].in_proj_weight.device)
        strength[heads] = 1.0
        attns[block].set_ablation(mode, strength, alpha)
    return model


def ablate_soft(model: nn.Module, strengths: torch.Tensor, mode: str = "zero", alpha: float = 0.0) -> nn.Module:
    """Ablate every head by a strength in [0, 1] ([blocks, heads], may carry gradients: what
    back-propagated ablation learns); replaces any earlier ablation."""
    attns = head_attentions(model)
    if mode not in ABLATION_MODES:
        raise DGHeadsError(f"ablation mode {mode!r} is not one of {ABLATION_MODES}")
    if tuple(strengths.shape) != head_grid(model):
        raise DGHeadsError(f"ablation strengths have shape {tuple(strengths.shape)}; expected {head_grid(model)}")
    for attn, row in zip(attns, strengths):
        attn.set_ablation(mode, row, alpha)
    return model


def clear_ablation(model: nn.Module) -> nn.Module:
    for attn in head_attentions(model):
        attn.clear_ablation()
    return model


def ablation_mask(model: nn.Module) -> HeadMask:
    """The heads currently ablated (strength > 0)."""
    return HeadMask.from_pairs((block, head) for block, attn in enumerate(head_attentions(model))
                               if attn.ablation_strength is not None
                               for head in torch.nonzero(attn.ablation_strength > 0).flatten().tolist())


def add_lora(model: nn.Module, targets: Sequence[str] = ("q", "v"), ranks: int | Sequence[int] = 8,
             head_aware: bool = True, alpha: float | None = None) -> list[HeadLoRA | None]:
    """Attach LoRA to every block (rank 0 skips a block); `ranks` is one int or one per block.
    A block's earlier adapter is replaced; if it was merged, its update leaves the weights first."""
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


@contextlib.contextmanager
def tapping(model: nn.Module, blocks: Iterable[int] | None = None) -> Iterator[dict[int, HeadTap]]:
    """Record each head's output (after ablation, before its gate) of the chosen blocks in the one
    forward run inside the scope, inside the autograd graph:

        with heads.tapping(model, blocks=[10, 11]) as taps:
            logits = model(images)
        loss = f(taps[11]["cls"], taps[11]["gate"])   # [B, H, d_h] and [H] (see `HeadTap`)

    The record is the caller's: nothing of it stays on the model after the scope, so a copy, a
    compile or a later forward cannot read or change it; a second forward inside the scope raises.
    (Activation checkpointing's recomputation in the backward records nothing.)"""
    attns = head_attentions(model)
    chosen = _blocks_arg(attns, blocks)
    if any(attns[b].tap_sink is not None for b in chosen):
        raise RuntimeError("heads.tapping scopes cannot nest on the same blocks")
    record: dict[int, HeadTap] = {}
    for b in chosen:
        attns[b].tap_sink = TapSink(record, b)
    try:
        yield record
    finally:
        for b in chosen:
            attns[b].tap_sink = None


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
    open_clip_vit.replace_attention(plain, [open_clip_vit.native(w, a) for w, a in
                                            zip(folded, head_attentions(plain))])
    return plain


def save_export(model: nn.Module, path: str | Path) -> Path:
    """Export and save a state dict that `open_clip.create_model(name, pretrained=path)` loads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export(model).state_dict(), path)
    return path


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering block 0 ([batch, tokens, width]); see `run_blocks` and `features`."""
    return open_clip_vit.embed(model, images)


def run_blocks(model: nn.Module, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Blocks `start` .. `stop - 1` on `tokens` (with the heads' controls as set)."""
    return open_clip_vit.run_blocks(model, tokens, start, stop)


def features(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Image features (before CLIP's normalisation) from the last block's tokens:
    `features(m, run_blocks(m, embed(m, x)))` is `m.visual(x)`."""
    return open_clip_vit.features(model, tokens)
