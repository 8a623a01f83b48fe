"""Attention Head Purification (Wang & Kang, 2024): purify CLIP's heads at two levels.

Task level, head-aware LoRA (HA-LoRA): every head of the adapted projections (q and v by
default) gets its own low-rank adapter; rank 8 in the last two blocks and 2 elsewhere.
Domain level, domain-invariant gating (DIG): per block `g = H * softmax(theta)` on the head
outputs, identity at init, shared by all domains, kept at inference (folded at export).

Loss: `CE(CLIP logits) + mmd_weight * MMD`, the MMD taken between every pair of source domains
in the batch on each gated block's gated per-head features (CLS token by default), averaged over
blocks; all blocks' MMDs are one batched computation in fp32 (`dg_heads.losses.batched_mmd`).
Gradient routing of the MMD term (`mmd_routing`):
  gates        the MMD's full gradient reaches every gate (a block's MMD also reaches the gates
               of the blocks before it, through the features) and no LoRA factor: the paper's
               best row, "the MMD updates only the gates", read plainly; the default;
  lora         the MMD's full gradient reaches the LoRA factors and no gate;
  both         every trainable tensor gets the MMD's gradient;
  gates_local  a cheaper approximation of `gates`: the head outputs enter the MMD detached, so a
               block's MMD reaches only that block's own gate (no extra backward work).
The non-default routings are overlays in configs/method/hap_variants/ (`mmd_on_lora`,
`mmd_on_both`, `mmd_gates_local`); their runs land in folders of their own (`run_name`).
Cross-entropy trains LoRA and gates alike. `gates` and `lora` take the MMD's gradient for their
parameters with `torch.autograd.grad` and add it to the loss as a surrogate term (value 0,
gradient exactly that), so a step still has one `backward` as DDP sees it; that extra gradient
computation is what `gates_local` saves. Its cost (FLOPs and ops per step) is in `mmd_term`.

What is the paper's and what is ours (see ../shared/research/methods.md in the project's notes):
the paper's: HA-LoRA on q and v with ranks 8 (last two blocks) / 2, gates `H * softmax(theta)`
on head outputs before the output projection, an MMD on the gated head features "on each layer",
"the Gaussian kernel", MMD updating only the gates as the best row, joint training. Ours: the
CLS token (or token mean) as the feature, the mean over gated blocks, DomainBed's sum of 7 RBF
kernels as the default kernel (`mmd_kernel: gaussian` is one Gaussian with a median-heuristic
bandwidth), the plain reading of "only the gates" above, theta = 0 at init, `mmd_weight` 1.

The paper's ablation rows are switches: HA-LoRA only (`gating.enabled: false`), gating+MMD only
(`lora.enabled: false`), both (default), plain LoRA + gating (`lora.head_aware: false`), plain
LoRA alone (`lora.head_aware: false`, `gating.enabled: false`). See configs/method/hap_variants/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec
from dg_heads.callbacks import GateFile
from dg_heads.errors import DGHeadsError, keyed
from dg_heads.heads.attention import HeadTap, TapFeature
from dg_heads.losses import DOMAINBED_GAMMAS, KERNELS, batched_mmd
from dg_heads.losses.mmd import Kernel
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec

Routing = Literal["gates", "lora", "both", "gates_local"]
ROUTINGS: tuple[str, ...] = get_args(Routing)


@dataclass
class LoRASpec:
    """`ranks`: one per block; null means HAP's: 8 in the last two blocks, 2 elsewhere."""

    enabled: bool = True
    head_aware: bool = True
    targets: list[str] = field(default_factory=lambda: ["q", "v"])
    ranks: list[int] | None = None
    alpha: float | None = None


@dataclass
class GatingSpec:
    """`blocks`: gated blocks, null means all. MMD is on when `mmd_weight > 0`."""

    enabled: bool = True
    blocks: list[int] | None = None
    mmd_weight: float = 1.0
    mmd_routing: Routing = "gates"
    mmd_feature: TapFeature = "cls"
    mmd_kernel: Kernel = "domainbed"
    mmd_gammas: list[float] = field(default_factory=lambda: list(DOMAINBED_GAMMAS))  # of the `domainbed` kernel


def hap_ranks(num_blocks: int) -> list[int]:
    return [2] * max(0, num_blocks - 2) + [8] * min(2, num_blocks)


class HeadPurification(DGModule):
    """HA-LoRA + domain-invariant gating trained with CE + MMD; the image tower stays frozen."""

    def __init__(self, clip: CLIPSpec | None = None, optim: OptimSpec | None = None,
                 lora: LoRASpec | None = None, gating: GatingSpec | None = None) -> None:
        super().__init__(clip=clip, optim=optim)
        self.lora_spec, self.gating_spec = lora or LoRASpec(), gating or GatingSpec()
        if self.gating_spec.mmd_routing not in ROUTINGS:
            raise DGHeadsError(f"gating.mmd_routing {self.gating_spec.mmd_routing!r} is not one of {ROUTINGS}")
        if self.gating_spec.mmd_kernel not in KERNELS:
            raise DGHeadsError(f"gating.mmd_kernel {self.gating_spec.mmd_kernel!r} is not one of {KERNELS}")
        if not math.isfinite(self.gating_spec.mmd_weight) or self.gating_spec.mmd_weight < 0:
            raise DGHeadsError(f"gating.mmd_weight must be a finite number >= 0, got {self.gating_spec.mmd_weight}")
        if not self.lora_spec.enabled and not self.gating_spec.enabled:
            raise DGHeadsError("lora.enabled and gating.enabled are both false: nothing to train")
        heads.convert(self.clip)
        num_blocks = len(heads.head_attentions(self.clip))
        if self.lora_spec.enabled:
            ranks = self.lora_spec.ranks if self.lora_spec.ranks is not None else hap_ranks(num_blocks)
            with keyed("lora"):
                heads.add_lora(self.clip, self.lora_spec.targets, ranks,
                               self.lora_spec.head_aware, self.lora_spec.alpha)
        self.gated_blocks: list[int] = []
        if self.gating_spec.enabled:
            with keyed(f"gating.blocks {self.gating_spec.blocks}"):
                heads.add_gates(self.clip, self.gating_spec.blocks)
            self.gated_blocks = sorted(set(self.gating_spec.blocks or range(num_blocks)))
        self.num_domains: int | None = None  # source domains: set in setup (a step then reads nothing on the host)
        # on the weights' device with them: no host-to-device copy in a step
        self.register_buffer("mmd_gammas", torch.tensor(self.gating_spec.mmd_gammas, dtype=torch.float32),
                             persistent=False)

    @classmethod
    def run_name(cls, init_args) -> str:
        """`hap`, or the ablation row: `lora` (plain LoRA), `ha_lora`, `gating`, `lora_gating`;
        a routing other than the default `gates` is added (`hap_mmd_lora`, `hap_mmd_gates_local`),
        so the paper's routing rows land in folders of their own."""
        lora, gating = (init_args or {}).get("lora") or LoRASpec(), (init_args or {}).get("gating") or GatingSpec()
        parts = [f"{'ha_' if lora.head_aware else ''}lora"] if lora.enabled else []
        parts += ["gating"] if gating.enabled else []
        name = "hap" if parts == ["ha_lora", "gating"] else "_".join(parts)
        routed = gating.enabled and gating.mmd_weight > 0 and gating.mmd_routing != "gates"
        return f"{name}_mmd_{gating.mmd_routing}" if routed else name

    @property
    def mmd_on(self) -> bool:
        return bool(self.gated_blocks) and self.gating_spec.mmd_weight > 0

    def configure_trainable(self) -> None:
        super().configure_trainable()
        for attn in heads.head_attentions(self.clip):
            for part in (attn.lora, attn.gate):
                if part is not None:
                    part.requires_grad_(True)

    def check_task(self, task: str, stage: str) -> None:
        """The MMD aligns source domains: retrieval data has none. LoRA and gates without it serve
        any task (plain LoRA: configs/method/lora.yaml)."""
        if task != "classification" and self.mmd_on:
            raise DGHeadsError(
                f"HAP's MMD aligns the source domains, and the data's task {task!r} has none: use plain LoRA "
                "(configs/method/lora.yaml) or set model.init_args.gating.mmd_weight: 0",
                "model.init_args.gating.mmd_weight")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        if stage == "fit" and self.mmd_on:
            if len(datamodule.source_domains) < 2:
                raise DGHeadsError(
                    f"the MMD needs at least 2 source domains; the data has {datamodule.source_domains} "
                    f"(set model.init_args.gating.mmd_weight: 0 to train without it)"
                )
            self.num_domains = len(datamodule.source_domains)
            if getattr(datamodule, "batch_size_per_domain", 2) < 2:
                raise DGHeadsError(
                    f"data.batch_size_per_domain is {datamodule.batch_size_per_domain}; the MMD needs "
                    f"at least 2 images per domain in every step"
                )
            if self.separate_mmd_pass() and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
                raise DGHeadsError(
                    f"gating.mmd_routing {self.gating_spec.mmd_routing!r} takes the MMD's gradient in a "
                    f"backward pass of its own, which the loss scaling of trainer.precision "
                    f"{self.trainer.precision!r} does not reach (in fp16 the early gates' small "
                    f"gradients can underflow to zero): use trainer.precision bf16-mixed or 32-true, or "
                    f"model.init_args.gating.mmd_routing gates_local or both (one backward, loss-scaled)"
                )

    # -------------------------------------------------------------- loss
    def mmd_loss(self, taps: dict[int, HeadTap], domains: torch.Tensor) -> torch.Tensor:
        """Mean over gated blocks of the MMD between source domains of the gated head features
        (`taps`: what `heads.tapping` recorded in the loss's own forward), all blocks in one batched
        computation. Only `gates_local` detaches anything here; `mmd_term` routes the gradient of
        the others."""
        spec = self.gating_spec
        taps = [taps[block] for block in self.gated_blocks]
        outputs = torch.stack([tap[spec.mmd_feature] for tap in taps])  # [blocks, n, H, d_h]
        gates = torch.stack([tap["gate"] for tap in taps])  # the values this forward used
        if spec.mmd_routing == "gates_local":
            outputs = outputs.detach()
        # in fp32, as the MMD: a bf16 gate near 1 would round to 1 (see HeadAttention's fold)
        features = (outputs.float() * gates.float()[:, None, :, None]).flatten(2)  # [blocks, n, H * d_h]
        # outside fit (num_domains unset in setup): read off the batch, a host read
        num_domains = self.num_domains if self.num_domains is not None else int(domains.max()) + 1
        return batched_mmd(features, domains, num_domains, spec.mmd_kernel, self.mmd_gammas).mean()

    def routed_parameters(self) -> list[torch.nn.Parameter] | None:
        """The tensors the MMD's gradient may reach; None: all of them (`both`, `gates_local`)."""
        routing, attns = self.gating_spec.mmd_routing, heads.head_attentions(self.clip)
        if routing == "gates":
            return [p for a in attns if a.gate is not None for p in a.gate.parameters() if p.requires_grad]
        if routing == "lora":
            return [p for a in attns if a.lora is not None for p in a.lora.parameters() if p.requires_grad]
        return None

    def separate_mmd_pass(self) -> bool:
        """True when `mmd_term` takes the MMD's gradient in a backward pass of its own
        (`torch.autograd.grad`): `gates` or `lora` routing with other tensors training too.

        That pass is not loss-scaled, so HAP refuses fp16 mixed precision (a GradScaler) with it
        in `setup`, rather than scale it: the scale tensor is private GradScaler state that exists
        only after the first `scaler.scale` (which Lightning calls after the training step), and
        an overflowing scaled pass, routine under dynamic scaling, would make the loss value
        non-finite and stop the run. bf16 needs no scaling (its exponent is fp32's), and the
        one-backward routings are scaled with the rest of the loss."""
        params = self.routed_parameters()
        if not self.mmd_on or not params:
            return False
        return {id(p) for p in params} != {id(p) for p in self.parameters() if p.requires_grad}

    def mmd_term(self, mmd: torch.Tensor) -> torch.Tensor:
        """What the loss adds for the MMD: its value, and its gradient for the routed tensors only.

        `surrogate = sum(p * g)` with `g` the MMD's gradient for each routed tensor p (detached)
        has gradient exactly g; `mmd.detach() + surrogate - surrogate.detach()` has the MMD's value
        and that gradient, so the step's single backward (the one DDP reduces) carries it.

        What the exact routings cost. With the image tower frozen, a backward computes activation
        gradients (about one matmul per forward matmul, ~1 forward of FLOPs) plus the tiny LoRA and
        gate gradients: plain LoRA's step is ~forward + 1 activation backward, and so are `both`
        (one stream, CE + MMD) and `gates_local` (the MMD's gradient stops at each block's own
        gate). `gates` and `lora` send the MMD's gradient to parameters in every block below the
        gated features, along the same activations as CE's, while the other group must not get
        it: the two cotangents cannot share one stream, so a second activation backward runs
        from the last gated block down to block 0: ~forward + 2 activation backwards, 1.5x plain
        LoRA's FLOPs (on a compute-bound GPU at best ~0.67x its images/s), whatever the op count.
        Ops per step (experiments/bench_step_ops.py, ViT-B/16, 5 domains, docs/benchmarks.md):
        plain LoRA 581, `gates_local` 844 (1.45x), `gates` 1,203 (2.07x): the second stream is
        ~360 ops, 12 blocks x (8 activation-gradient matmuls: output and fused input projection,
        MLP in and out, LoRA q and v; 2 layer-norm, attention, GELU and gate-softmax backwards;
        adds and muls), ~0.6x plain LoRA's whole step, so an exact routing with two streams
        cannot reach 1.5x. Running both streams as one batched backward (a [2, ...] cotangent;
        rejected: docs/benchmarks.md, same gradients) issues *more* ops, 1,641 (2.82x),
        with `torch.func.vmap` and with `is_grads_batched`: batching rules copy their batched
        operands to contiguous memory (layer-norm backward clones its saved input, mean and
        rstd; weight-gradient matmuls clone transposed cotangents) and ops without a batching
        rule (CPU flash-attention backward; under `is_grads_batched`'s legacy vmap also layer
        norm, GELU and softmax backward) run once per stream; and it keeps the FLOPs. So this
        two-pass form stays; `gates_local` is the routing within 1.5x ops and ~1x FLOPs."""
        params = self.routed_parameters()
        if params is None or not torch.is_grad_enabled():
            return mmd
        if not params:
            return mmd.detach()
        if not self.separate_mmd_pass():
            return mmd  # the routed tensors are all that train (gating without LoRA): the plain gradient, one pass
        grads = torch.autograd.grad(mmd, params, retain_graph=True, allow_unused=True)
        surrogate = sum((p * g.detach()).sum() for p, g in zip(params, grads) if g is not None)
        if not isinstance(surrogate, torch.Tensor):  # no routed tensor reaches the MMD
            return mmd.detach()
        return mmd.detach() + surrogate - surrogate.detach()

    def training_loss(self, images, labels, domains):
        """The gated blocks' head outputs come from this forward alone: `heads.tapping` hands them
        to the loss and keeps nothing on the model (no state a copy, a compile or another forward
        could see)."""
        with heads.tapping(self.clip, self.gated_blocks if self.mmd_on else []) as taps:
            logits = self(images)
        ce = F.cross_entropy(logits, labels)
        logs = {"train/ce": ce, "train/acc": (logits.argmax(-1) == labels).float().mean()}
        if not self.mmd_on:
            return ce, logs
        mmd = self.mmd_loss(taps, domains)
        logs["train/mmd"] = mmd.detach()
        return ce + self.gating_spec.mmd_weight * self.mmd_term(mmd), logs

    # ------------------------------------------------------- what a user sees
    def default_callbacks(self):
        """The gates as a heatmap at every validation and `gates.json`/`.csv` after training."""
        return super().default_callbacks() + ([GateFile()] if self.gated_blocks else [])
