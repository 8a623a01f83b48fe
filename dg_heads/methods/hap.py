"""Attention Head Purification (Wang & Kang, 2024): purify CLIP's heads at two levels.

Task level, head-aware LoRA (HA-LoRA): every head of the adapted projections (q and v by
default) gets its own low-rank adapter; rank 8 in the last two blocks and 2 elsewhere.
Domain level, domain-invariant gating (DIG): per block `g = H * softmax(theta)` on the head
outputs, identity at init, shared by all domains, kept at inference (folded at export).

Loss: `CE(CLIP logits) + mmd_weight * MMD`, the MMD taken between every pair of source domains
in the batch on each gated block's gated per-head features (CLS token by default), averaged over
blocks. Gradient routing of the MMD term (`mmd_routing`):
  gates  the MMD reaches only the gates of the block it is measured on (the head outputs enter
         it detached): the paper's best variant, the default;
  lora   the gate values enter it detached: the MMD reaches the LoRA factors (and, through the
         features, the gates of earlier blocks);
  both   nothing detached.
Cross-entropy trains LoRA and gates alike. One backward pass per step in every mode (DDP-safe).

The paper's ablation rows are switches: HA-LoRA only (`gating.enabled: false`), gating+MMD only
(`lora.enabled: false`), both (default), plain LoRA + gating (`lora.head_aware: false`), plain
LoRA alone (`lora.head_aware: false`, `gating.enabled: false`). See configs/hap_variants/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from dg_heads import heads
from dg_heads.backbone import CLIPSpec
from dg_heads.errors import DGHeadsError
from dg_heads.heatmap import log_heatmap, write_matrix
from dg_heads.losses import DOMAINBED_GAMMAS, multi_domain_mmd
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec
from dg_heads.reporting import run_dir

ROUTINGS = ("gates", "lora", "both")


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
    mmd_routing: Literal["gates", "lora", "both"] = "gates"
    mmd_feature: Literal["cls", "mean"] = "cls"
    mmd_gammas: list[float] = field(default_factory=lambda: list(DOMAINBED_GAMMAS))


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
        if not math.isfinite(self.gating_spec.mmd_weight) or self.gating_spec.mmd_weight < 0:
            raise DGHeadsError(f"gating.mmd_weight must be a finite number >= 0, got {self.gating_spec.mmd_weight}")
        if not self.lora_spec.enabled and not self.gating_spec.enabled:
            raise DGHeadsError("lora.enabled and gating.enabled are both false: nothing to train")
        heads.convert(self.clip)
        num_blocks = len(heads.head_attentions(self.clip))
        if self.lora_spec.enabled:
            ranks = self.lora_spec.ranks if self.lora_spec.ranks is not None else hap_ranks(num_blocks)
            heads.add_lora(self.clip, self.lora_spec.targets, ranks, self.lora_spec.head_aware, self.lora_spec.alpha)
        self.gated_blocks: list[int] = []
        if self.gating_spec.enabled:
            heads.add_gates(self.clip, self.gating_spec.blocks)
            self.gated_blocks = sorted(set(self.gating_spec.blocks or range(num_blocks)))
        if self.mmd_on:
            heads.set_taps(self.clip, blocks=self.gated_blocks)

    @property
    def mmd_on(self) -> bool:
        return bool(self.gated_blocks) and self.gating_spec.mmd_weight > 0

    def configure_trainable(self) -> None:
        super().configure_trainable()
        for attn in heads.head_attentions(self.clip):
            for part in (attn.lora, attn.gate):
                if part is not None:
                    part.requires_grad_(True)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        if stage == "fit" and self.mmd_on:
            if len(datamodule.source_domains) < 2:
                raise DGHeadsError(
                    f"the MMD needs at least 2 source domains; the data has {datamodule.source_domains} "
                    f"(set model.init_args.gating.mmd_weight: 0 to train without it)"
                )
            if getattr(datamodule, "batch_size_per_domain", 2) < 2:
                raise DGHeadsError(
                    f"data.batch_size_per_domain is {datamodule.batch_size_per_domain}; the MMD needs "
                    f"at least 2 images per domain in every step"
                )

    # -------------------------------------------------------------- loss
    def mmd_loss(self, domains: torch.Tensor) -> torch.Tensor:
        spec, attns = self.gating_spec, heads.head_attentions(self.clip)
        terms = []
        for block in self.gated_blocks:
            attn = attns[block]
            outputs, gates = attn.tap[spec.mmd_feature], attn.gate.values().to(attn.tap[spec.mmd_feature].dtype)
            if spec.mmd_routing == "gates":
                outputs = outputs.detach()
            elif spec.mmd_routing == "lora":
                gates = gates.detach()
            features = (outputs * gates.view(1, -1, 1)).flatten(1)
            terms.append(multi_domain_mmd(features, domains, tuple(spec.mmd_gammas)))
        return torch.stack(terms).mean()

    def training_loss(self, images, labels, domains):
        logits = self(images)
        ce = F.cross_entropy(logits, labels)
        logs = {"train/ce": ce, "train/acc": (logits.argmax(-1) == labels).float().mean()}
        if not self.mmd_on:
            return ce, logs
        mmd = self.mmd_loss(domains)
        logs["train/mmd"] = mmd
        return ce + self.gating_spec.mmd_weight * mmd, logs

    # ------------------------------------------------------- what a user sees
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.gated_blocks and not self.trainer.sanity_checking:
            log_heatmap(self, "gates", heads.gate_values(self.clip))

    def on_train_end(self) -> None:
        folder = run_dir(self.trainer)
        if self.gated_blocks and self.trainer.is_global_zero and folder is not None:
            write_matrix(heads.gate_values(self.clip), folder / "gates")
