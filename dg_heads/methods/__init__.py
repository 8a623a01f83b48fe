"""The LightningModules of dg-heads, one family per file."""

from dg_heads.methods.aat import AttentionAblation, SearchSpec
from dg_heads.methods.base import DGModule
from dg_heads.methods.baseline import CLIPBaseline
from dg_heads.methods.hap import GatingSpec, HeadPurification, LoRASpec

__all__ = ["AttentionAblation", "CLIPBaseline", "DGModule", "GatingSpec", "HeadPurification", "LoRASpec", "SearchSpec"]
