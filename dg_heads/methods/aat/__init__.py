"""Attention Ablation (AAT): the LightningModule (`module`) and its search components.

    scorer.py    MaskScorer: source accuracy under a head mask, with block-input caches
    scan.py      every head ablated alone (the importance map) and the top-k that help
    genetic.py   a seeded GA over binary head masks
    backprop.py  learned per-head ablation strengths, binarised
    report.py    what the search chose, said and written to the run folder (a callback)

Every part goes through the head engine (`dg_heads.heads`) and its `HeadMask`.
"""

from dg_heads.methods.aat.genetic import GASpec, genetic_search
from dg_heads.methods.aat.module import AttentionAblation, SearchSpec, leave_out_ddp_wrapper
from dg_heads.methods.aat.report import SearchOutcome, SearchReport
from dg_heads.methods.aat.scan import scan, top_heads
from dg_heads.methods.aat.scorer import MaskScorer

__all__ = ["AttentionAblation", "GASpec", "MaskScorer", "SearchOutcome", "SearchReport", "SearchSpec", "genetic_search",
           "leave_out_ddp_wrapper", "scan", "top_heads"]
