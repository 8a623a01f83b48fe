"""The LightningModules of dg-heads, one family per file."""

from dg_heads.methods.base import DGModule
from dg_heads.methods.baseline import CLIPBaseline

__all__ = ["CLIPBaseline", "DGModule"]
