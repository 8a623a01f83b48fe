"""A measured alternative to HAP's exact `gates` / `lora` MMD routing: both cotangent streams in
one batched backward. Kept as an experiment (a row of `bench_step_ops.py`), not shipped.

HAP's routing (`dg_heads.methods.hap`, `mmd_term`) takes the MMD's gradient for the routed
tensors with a second `torch.autograd.grad` pass and adds it to the step's one backward through
a surrogate term: two backward streams through the blocks, as two sequences of ops. Here the
two losses are stacked into one output `[CE, w * MMD]` and differentiated with the identity as
a batch of two cotangents, so every backward op runs once on a [2, ...] cotangent:

- `engine="func"`: `torch.func.vmap` over `torch.autograd.grad` (functorch's batching rules);
- `engine="is_grads_batched"`: `torch.autograd.grad(..., is_grads_batched=True)`, which runs the
  backward under the legacy vmap prototype.

Each parameter then gets stream 0 (CE) plus, if routed, stream 1 (MMD), and the loss returned is
`value + surrogate - surrogate.detach()` with `surrogate = sum(p * g)`: one cheap backward that
puts those gradients into `.grad` (where DDP's hooks see them). The gradients equal the shipped
routing's (tests/dg_heads/methods/test_hap.py); the op counts do not help (docs/benchmarks.md, bench_step_ops):
batching rules copy their batched operands to make them contiguous (layer-norm backward clones
its saved input, mean and rstd per stream; weight-gradient matmuls clone transposed cotangents)
and ops with no batching rule (the CPU flash-attention backward; under the legacy prototype also
layer norm, GELU and softmax backward) run once per stream plus a `stack`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def two_stream_loss(module, images, labels, domains, engine: Literal["func", "is_grads_batched"] = "func"):
    """`HeadPurification.training_loss` with `gates` / `lora` routing done by one batched backward."""
    logits = module(images)
    ce = F.cross_entropy(logits, labels)
    logs = {"train/ce": ce, "train/acc": (logits.argmax(-1) == labels).float().mean()}
    mmd = module.mmd_loss(domains)
    logs["train/mmd"] = mmd.detach()
    weight = module.gating_spec.mmd_weight
    routed = module.routed_parameters()
    if routed is None or not torch.is_grad_enabled():
        raise ValueError("two_stream_loss is for the `gates` and `lora` routings in a training step")
    routed_ids = {id(p) for p in routed}
    params = [p for p in module.parameters() if p.requires_grad]
    losses = torch.stack([ce.float(), weight * mmd.float()])  # [2]: the two streams
    identity = torch.eye(2, device=losses.device, dtype=losses.dtype)
    with torch.autocast(losses.device.type, enabled=False):  # a backward as Lightning's: outside autocast
        if engine == "is_grads_batched":
            grads = torch.autograd.grad(losses, params, identity, is_grads_batched=True, allow_unused=True)
        else:
            def backward(cotangent):
                found = torch.autograd.grad(losses, params, cotangent, allow_unused=True)
                return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, found))

            grads = torch.func.vmap(backward)(identity)
    surrogate = sum(
        (p * (g[0] + g[1] if id(p) in routed_ids else g[0]).detach()).sum()
        for p, g in zip(params, grads)
        if g is not None
    )
    value = (ce + weight * mmd).detach()
    return value + surrogate - surrogate.detach(), logs
