"""Optimiser settings shared by every method: AdamW with linear warm-up and cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class OptimSpec:
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    betas: tuple[float, float] = (0.9, 0.999)


def lr_lambda(spec: OptimSpec, total_steps: int):
    """Multiplier of the base lr at each optimiser step."""

    def factor(step: int) -> float:
        if spec.warmup_steps and step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if spec.schedule == "constant":
            return 1.0
        progress = (step - spec.warmup_steps) / max(1, total_steps - spec.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


_DISPATCH_KEYS = {"cuda": "CUDA", "cpu": "CPU", "mps": "MPS", "xpu": "XPU"}


def fused_adamw_available(device: torch.device) -> bool:
    """Whether this torch has the fused AdamW kernel for `device` (CPU's arrived in torch 2.4:
    before it `AdamW(fused=True)` builds on the CPU and fails at its first step)."""
    key = _DISPATCH_KEYS.get(torch.device(device).type)
    try:
        return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("aten::_fused_adamw_", key)
    except (AttributeError, RuntimeError):  # the (private) query is missing: the foreach implementation
        return False


def adamw(param_groups: list[dict], spec: OptimSpec) -> torch.optim.AdamW:
    """AdamW, fused where the parameters' device has the fused kernel (CUDA; CPU from torch 2.4):
    one kernel per step instead of a dozen foreach ops, and it takes a `found_inf` flag that skips
    a step on the device (the non-finite-loss guard uses it); the foreach implementation elsewhere."""
    kwargs = dict(lr=spec.lr, weight_decay=spec.weight_decay, betas=spec.betas)
    devices = {p.device for g in param_groups for p in g["params"]}
    if devices and all(fused_adamw_available(d) for d in devices):
        try:
            return torch.optim.AdamW(param_groups, fused=True, **kwargs)
        except RuntimeError:  # a dtype without the fused kernel
            pass
    return torch.optim.AdamW(param_groups, **kwargs)


def build_optimizer(spec: OptimSpec, param_groups: list[dict], total_steps: int) -> dict:
    """Lightning's `configure_optimizers` answer: AdamW plus a per-step LambdaLR."""
    optimizer = adamw(param_groups, spec)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
