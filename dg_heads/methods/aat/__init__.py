"""Attention Ablation (AAT): the LightningModule (`module`) and its search components.

    scorer.py    MaskScorer: source accuracy under a head mask, with block-input caches sized
                 before the search (`cache_bytes`, `plan_cache`) and held within a budget
    scan.py      every head ablated alone (the importance map) and the top-k that help
    genetic.py   a seeded GA over binary head masks
    backprop.py  learned per-head ablation strengths, binarised
    search.py    HeadSearch: the search as a named step of fit (a callback): runs it, writes
                 ablation.json, gives the mask to the module
    report.py    what the search chose, said and written to the run folder (a callback)

Every part goes through the head engine (`dg_heads.heads`) and its `HeadMask`.
"""

from dg_heads.methods.aat.genetic import GASpec, genetic_search
from dg_heads.methods.aat.module import AttentionAblation, SearchSpec, leave_out_ddp_wrapper
from dg_heads.methods.aat.report import SearchOutcome, SearchReport
from dg_heads.methods.aat.scan import scan, top_heads
from dg_heads.methods.aat.scorer import CachePlan, MaskScorer, cache_bytes, cache_dtype, plan_cache, vision_dims
from dg_heads.methods.aat.search import HeadSearch

__all__ = ["AttentionAblation", "CachePlan", "GASpec", "HeadSearch", "MaskScorer", "SearchOutcome", "SearchReport",
           "SearchSpec", "cache_bytes", "cache_dtype", "genetic_search", "leave_out_ddp_wrapper", "plan_cache", "scan",
           "top_heads", "vision_dims"]
