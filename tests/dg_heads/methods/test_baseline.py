"""`CLIPBaseline`: what each mode trains (nothing; the classifier; the image tower, or for retrieval
both towers and the logit scale), its run folder's name, and linear probing refused on retrieval
data in one keyed line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dg_heads.backbone import CLIPSpec
from dg_heads.errors import DGHeadsError
from dg_heads.methods import CLIPBaseline
from dg_heads.tasks import task_named


def _trained(mode: str, task: str) -> set[str]:
    model = CLIPBaseline(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None), mode=mode)
    model.task = task_named(task)
    model.classifier = nn.Parameter(torch.zeros(3, model.embed_dim()), requires_grad=False)
    model.clip.requires_grad_(True)  # what the mode does not train is frozen by it
    model.configure_trainable()
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_each_mode_trains_its_part():
    model = CLIPBaseline(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None))
    clip = {f"clip.{name}" for name, _ in model.clip.named_parameters()}
    visual = {name for name in clip if name.startswith("clip.visual.")}
    assert visual and "clip.logit_scale" in clip - visual and "clip.token_embedding.weight" in clip - visual
    assert _trained("zero_shot", "classification") == set()
    assert _trained("linear_probe", "classification") == {"classifier"}
    assert _trained("finetune", "classification") == visual
    assert _trained("finetune", "retrieval") == clip


def test_run_name_is_the_mode_and_linear_probe_refuses_retrieval():
    assert CLIPBaseline.run_name({"mode": "zero_shot"}) == "zero_shot"
    assert CLIPBaseline.run_name(None) == CLIPBaseline.run_name({}) == "finetune"
    model = CLIPBaseline(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None), mode="linear_probe")
    with pytest.raises(DGHeadsError, match=r"^model\.init_args\.mode: mode linear_probe trains a classifier"):
        model.check_task("retrieval", "fit")
    model.check_task("classification", "fit")
    for mode in ("zero_shot", "finetune"):
        model.mode = mode
        model.check_task("retrieval", "fit")
