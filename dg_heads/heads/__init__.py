"""CLIP's image-tower attention with every head under control: LoRA, gates, ablation, taps, export."""

from dg_heads.heads.api import (
    ablate,
    ablation_mask,
    add_gates,
    add_lora,
    clear_ablation,
    convert,
    export,
    gate_values,
    head_attentions,
    merge_lora,
    save_export,
    set_taps,
    taps,
    unmerge_lora,
    validate_mask,
)
from dg_heads.heads.attention import ABLATION_MODES, HeadAttention
from dg_heads.heads.gates import HeadGate
from dg_heads.heads.lora import TARGETS, HeadLoRA

__all__ = [
    "ABLATION_MODES", "TARGETS", "HeadAttention", "HeadGate", "HeadLoRA", "ablate", "ablation_mask",
    "add_gates", "add_lora", "clear_ablation", "convert", "export", "gate_values", "head_attentions",
    "merge_lora", "save_export", "set_taps", "taps", "unmerge_lora", "validate_mask",
]
