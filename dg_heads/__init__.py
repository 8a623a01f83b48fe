"""dg-heads: domain generalisation with CLIP's attention heads as experts."""

__version__ = "0.1.0"
