"""`ClassificationTask`: the class-prompt classifier built once (a checkpoint's of another size refused),
accuracy per evaluation domain over its batches, their mean, and the images scored per domain."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dg_heads.errors import DGHeadsError
from dg_heads.tasks import task_named


class _Module(nn.Module):
    """What the task uses of a `DGModule`: the model's logits are its input (scores chosen by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = None
        self.metrics, self.counts, self.eval_domains, self.logged = nn.ModuleDict(), nn.ModuleDict(), {}, {}

    def text_classifier(self, class_names):
        return torch.eye(len(class_names))

    def forward(self, images):
        return images

    def log(self, name, value, **kwargs):
        self.logged[name] = float(value)


class _Data:
    class_names = ["cat", "dog", "fox"]

    def eval_domains(self, split):
        return ["photo", "sketch"] if split == "val" else ["art"]


def test_accuracy_per_domain_their_mean_and_the_images_scored():
    task, module = task_named("classification"), _Module()
    task.setup(module, _Data(), "fit")
    assert module.classifier.shape == (3, 3) and not module.classifier.requires_grad
    assert module.eval_domains == {"val": ["photo", "sketch"], "test": ["art"]}
    logits = torch.eye(3)
    # photo: predictions 0, 1 | 1, 2 of labels 0, 1 | 0, 0 (two batches): 2 of 4 right; sketch: 2, 2 of 2, 2
    task.eval_step(module, "val", (logits[[0, 1]], torch.tensor([0, 1])), 0)
    task.eval_step(module, "val", (logits[[1, 2]], torch.tensor([0, 0])), 0)
    task.eval_step(module, "val", (logits[[2, 2]], torch.tensor([2, 2])), 1)
    task.eval_step(module, "val", (torch.empty(0, 3), torch.empty(0, dtype=torch.long)), 1)  # all skipped
    task.epoch_end(module, "val")
    assert module.logged == pytest.approx({"val/acc/photo": 0.5, "val/n/photo": 4.0, "val/acc/sketch": 1.0,
                                           "val/n/sketch": 2.0, "val/acc": 0.75})
    module.logged.clear()  # the states were reset: the next epoch counts afresh
    task.eval_step(module, "val", (logits[[1]], torch.tensor([0])), 0)
    task.eval_step(module, "val", (logits[[0]], torch.tensor([0])), 1)
    task.epoch_end(module, "val")
    assert module.logged == pytest.approx({"val/acc/photo": 0.0, "val/n/photo": 1.0, "val/acc/sketch": 1.0,
                                           "val/n/sketch": 1.0, "val/acc": 0.5})


def test_a_classifier_of_another_number_of_classes_is_refused():
    module = _Module()
    module.classifier = nn.Parameter(torch.zeros(5, 3), requires_grad=False)  # a checkpoint's: 5 classes
    with pytest.raises(DGHeadsError, match="the checkpoint's classifier has 5 classes, the data 3"):
        task_named("classification").setup(module, _Data(), "test")
    kept = module.classifier = nn.Parameter(torch.ones(3, 3), requires_grad=False)  # the right size: kept
    task_named("classification").setup(module, _Data(), "test")
    assert module.classifier is kept
