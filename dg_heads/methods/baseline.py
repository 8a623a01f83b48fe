"""Baseline CLIP: zero-shot, linear probe and full fine-tune.

- `zero_shot`: nothing trains (`lightning validate` / `lightning test`); either task.
- `linear_probe`: image tower frozen; a cosine classifier initialised from the class-prompt
  text embeddings is trained (classification only: retrieval has no classes).
- `finetune`: classification: the whole image tower is trained against the frozen class-prompt
  embeddings; retrieval: both towers (and the logit scale) with CLIP's symmetric contrastive loss
  on the training pairs.
"""

from __future__ import annotations

from typing import Literal

from dg_heads.backbone import CLIPSpec
from dg_heads.errors import DGHeadsError
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

    def check_task(self, task: str, stage: str) -> None:
        if task != "classification" and self.mode == "linear_probe":
            raise DGHeadsError(f"mode linear_probe trains a classifier over classes; the data's task is {task!r}: "
                               "use mode finetune (configs/method/finetune.yaml) or zero_shot",
                               "model.init_args.mode")

    def configure_trainable(self) -> None:
        super().configure_trainable()
        if self.mode == "finetune":
            retrieval = self.task is not None and self.task.name == "retrieval"
            (self.clip if retrieval else self.clip.visual).requires_grad_(True)
        if self.mode == "linear_probe":
            self.classifier.requires_grad_(True)
