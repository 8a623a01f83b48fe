"""CLIP's image-tower attention with every head under control: LoRA, gates, ablation, taps, export.

`open_clip_vit` is the only module that knows open_clip's internals; `HeadMask` is the one
form of a head mask.
"""

from dg_heads.heads.api import (
    ablate,
    ablate_soft,
    ablation_mask,
    add_gates,
    add_lora,
    clear_ablation,
    convert,
    embed,
    export,
    features,
    gate_values,
    head_attentions,
    head_grid,
    merge_lora,
    run_blocks,
    save_export,
    tapping,
    unmerge_lora,
    validate_mask,
)
from dg_heads.heads.attention import ABLATION_MODES, HeadAttention
from dg_heads.heads.gates import HeadGate
from dg_heads.heads.lora import TARGETS, HeadLoRA
from dg_heads.heads.mask import HeadMask

__all__ = [
    "ABLATION_MODES", "TARGETS", "HeadAttention", "HeadGate", "HeadLoRA", "HeadMask", "ablate", "ablate_soft",
    "ablation_mask", "add_gates", "add_lora", "clear_ablation", "convert", "embed", "export", "features",
    "gate_values", "head_attentions", "head_grid", "merge_lora", "run_blocks", "save_export", "tapping",
    "unmerge_lora", "validate_mask",
]
