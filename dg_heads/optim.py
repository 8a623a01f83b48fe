"""Optimiser settings shared by every method: AdamW with linear warm-up and cosine decay."""

from __future__ import annotations

import functools
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


def lr_scheduler(optimizer: torch.optim.Optimizer, spec: OptimSpec, total_steps: int):
    """The per-step schedule: `warmup_steps` of linear warm-up (step s < W: lr x (s + 1) / W, the
    full lr at step W - 1), then the full lr (`constant`) or a cosine decay from the full lr at
    step W to 0 at `total_steps` (the Trainer's `estimated_stepping_batches`: its last step)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = spec.warmup_steps
    # step s < W: (1/W) + (1 - 1/W) s / (W - 1) = (s + 1) / W; W = 1 only reaches step 0 (factor 1)
    warm = LinearLR(optimizer, start_factor=1.0 / warmup if warmup else 1.0, end_factor=1.0,
                    total_iters=max(1, warmup - 1))
    if spec.schedule == "constant":
        return warm  # after its `total_iters`, LinearLR keeps the full lr
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=0.0)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup]) if warmup else cosine


_DISPATCH_DEVICES = ("cuda", "cpu", "mps", "xpu")  # device types torch may have a fused AdamW kernel for


@functools.cache
def _fused_adamw_steps_on(device_type: str) -> bool:
    try:
        weight = torch.zeros(1, device=device_type, requires_grad=True)
        weight.grad = torch.zeros(1, device=device_type)
        torch.optim.AdamW([weight], fused=True).step()
    except Exception:  # no kernel: refused when built, or at the step (torch 2.3's CPU); no such device here
        return False
    return True


def fused_adamw_available(device: torch.device) -> bool:
    """Whether this torch has the fused AdamW kernel for `device` (CPU's arrived in torch 2.4:
    before it `AdamW(fused=True)` builds on the CPU and fails at its first step). Found by one
    step of a one-element fused AdamW, once per device type (torch has no public query)."""
    device_type = torch.device(device).type
    return device_type in _DISPATCH_DEVICES and _fused_adamw_steps_on(device_type)


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
    """Lightning's `configure_optimizers` answer: AdamW plus its per-step schedule (`lr_scheduler`)."""
    optimizer = adamw(param_groups, spec)
    scheduler = lr_scheduler(optimizer, spec, total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
