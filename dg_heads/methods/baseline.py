"""Baseline CLIP: zero-shot, linear probe and full fine-tune of the image tower.

- `zero_shot`: nothing trains (`lightning validate` / `lightning test`).
- `linear_probe`: image tower frozen; a cosine classifier initialised from the class-prompt
  text embeddings is trained.
- `finetune`: the whole image tower is trained against the frozen class-prompt embeddings.
"""

from __future__ import annotations

from typing import Literal

from dg_heads.backbone import CLIPSpec
from dg_heads.methods.base import DGModule
from dg_heads.optim import OptimSpec

Mode = Literal["zero_shot", "linear_probe", "finetune"]


class CLIPBaseline(DGModule):
    """Args:
        clip: backbone (open_clip model name, pretrained tag or file, prompt templates).
        optim: AdamW + warm-up + cosine settings.
        mode: `zero_shot`, `linear_probe` or `finetune`.
    """

    def __init__(self, clip: CLIPSpec | None = None, optim: OptimSpec | None = None,
                 mode: Mode = "finetune") -> None:
        super().__init__(clip=clip, optim=optim)
        self.mode = mode

    @classmethod
    def run_name(cls, init_args) -> str:
        return (init_args or {}).get("mode") or "finetune"

    def configure_trainable(self) -> None:
        super().configure_trainable()
        if self.mode == "finetune":
            self.clip.visual.requires_grad_(True)
        if self.mode == "linear_probe":
            self.classifier.requires_grad_(True)
