"""Losses shared by the methods."""

from dg_heads.losses.mmd import DOMAINBED_GAMMAS, KERNELS, batched_mmd

__all__ = ["DOMAINBED_GAMMAS", "KERNELS", "batched_mmd"]
