"""The LightningModules of dg-heads, one family per file."""

from dg_heads.backbone import CLIPSpec
from dg_heads.methods.aat import AttentionAblation, SearchSpec
from dg_heads.methods.aat.genetic import GASpec
from dg_heads.methods.base import DGModule
from dg_heads.methods.baseline import CLIPBaseline
from dg_heads.methods.hap import GatingSpec, HeadPurification, LoRASpec
from dg_heads.optim import OptimSpec

__all__ = ["AttentionAblation", "CLIPBaseline", "CLIPSpec", "DGModule", "GASpec", "GatingSpec", "HeadPurification",
           "LoRASpec", "OptimSpec", "SearchSpec"]
