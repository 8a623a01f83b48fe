"""The LightningModules of dg-heads, one family per file."""

from dg_heads.backbone import CLIPSpec
from dg_heads.methods.aat import AttentionAblation, SearchSpec
from dg_heads.methods.aat.genetic import GASpec
from dg_heads.methods.base import DGModule, allow_spec_types
from dg_heads.methods.baseline import CLIPBaseline
from dg_heads.methods.hap import GatingSpec, HeadPurification, LoRASpec
from dg_heads.optim import OptimSpec

# A model built in Python keeps these in its hparams: `HeadPurification.load_from_checkpoint(path)`
# in a fresh process (torch's weights-only loader, its default) must know them before any model exists.
allow_spec_types(CLIPSpec, OptimSpec, LoRASpec, GatingSpec, SearchSpec, GASpec)

__all__ = ["AttentionAblation", "CLIPBaseline", "DGModule", "GatingSpec", "HeadPurification", "LoRASpec", "SearchSpec"]
