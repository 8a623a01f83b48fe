"""The optimiser every method uses: the learning-rate schedule and where AdamW runs fused."""

import math

import pytest
import torch

from dg_heads import optim
from dg_heads.optim import OptimSpec, build_optimizer, fused_adamw_available


def _lrs(spec: OptimSpec, total_steps: int, steps: int) -> list[float]:
    """The lr of each optimiser step 0..steps-1, stepped as Lightning does (optimiser, then scheduler)."""
    weight = torch.zeros(1, requires_grad=True)
    built = build_optimizer(spec, [{"params": [weight]}], total_steps)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.zeros(1)
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_at_hand_computed_steps():
    """lr 0.1, 4 warm-up steps, 14 steps: (s + 1)/4 of it for s = 0..3 (the full lr at step 3),
    then 0.05 (1 + cos(pi (s - 4) / 10)) down to 0 at step 14."""
    lrs = _lrs(OptimSpec(lr=0.1, warmup_steps=4), total_steps=14, steps=15)
    expected = {0: 0.025, 1: 0.05, 2: 0.075, 3: 0.1, 4: 0.1, 9: 0.05, 14: 0.0,
                6: 0.05 * (1 + math.cos(math.pi / 5)), 13: 0.05 * (1 + math.cos(0.9 * math.pi))}
    for step, value in expected.items():
        assert lrs[step] == pytest.approx(value, abs=1e-12), step


@pytest.mark.parametrize("warmup", [0, 1, 2, 5])
@pytest.mark.parametrize("total", [1, 3, 12, 100])
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_schedule_is_the_written_out_formula_at_every_step(warmup, total, schedule):
    """Linear warm-up (s + 1)/W, then constant or cosine to 0 at the last step (also W >= total)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    lrs = _lrs(OptimSpec(lr=0.1, warmup_steps=warmup, schedule=schedule), total, total + 1)
    assert lrs == pytest.approx([0.1 * factor(s) for s in range(total + 1)], abs=1e-12)


def test_fused_adamw_only_where_its_kernel_runs(monkeypatch):
    """A device type whose fused kernel is missing (torch 2.3's CPU: AdamW(fused=True) builds and
    fails at its first step) gets the foreach AdamW."""
    monkeypatch.setattr(optim, "_fused_adamw_steps_on", optim._fused_adamw_steps_on.__wrapped__)

    def missing(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::_fused_adamw_' with arguments from the 'CPU' backend")

    has_cpu_kernel = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)  # torch's changelog
    assert fused_adamw_available(torch.device("cpu")) == has_cpu_kernel
    assert not fused_adamw_available(torch.device("meta"))
    monkeypatch.setattr(torch, "_fused_adamw_", missing, raising=False)
    assert not fused_adamw_available(torch.device("cpu"))
    built = build_optimizer(OptimSpec(), [{"params": [torch.zeros(1, requires_grad=True)]}], 10)["optimizer"]
    assert not built.param_groups[0]["fused"]
