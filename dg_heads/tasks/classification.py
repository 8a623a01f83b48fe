"""Classification (dg-heads' first task, DomainBed's DG setting): a batch is `{domain: (images,
labels)}` in training and `(images, labels)` per evaluation domain; the model scores images
against class-prompt text embeddings (`DGModule.logits`); logged: every metric of
`metrics.CLASSIFICATION_METRICS` per domain (`val/acc/<domain>`, `test/acc/<domain>`) and its
mean over the domains (`val/acc`, which selects checkpoints, `test/acc`), and the images scored
(`val/n/<domain>`); the report is `DomainReport`."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import SumMetric

from dg_heads.callbacks import DomainReport
from dg_heads.errors import DGHeadsError
from dg_heads.tasks import metrics as names
from dg_heads.tasks.base import Task


class ClassificationTask(Task):
    name = "classification"

    def setup(self, module, datamodule, stage: str) -> None:
        if module.classifier is None:
            module.classifier = nn.Parameter(module.text_classifier(datamodule.class_names), requires_grad=False)
        elif module.classifier.shape[0] != len(datamodule.class_names):
            raise DGHeadsError(
                f"the checkpoint's classifier has {module.classifier.shape[0]} classes, the data "
                f"{len(datamodule.class_names)}"
            )
        for split in names.STAGES:
            domains = datamodule.eval_domains(split)
            module.eval_domains[split] = domains
            # per domain: {metric name: its state} (`metrics.CLASSIFICATION_METRICS`: a new metric is an entry there)
            module.metrics[split] = nn.ModuleList(
                nn.ModuleDict({name: build(len(datamodule.class_names))
                               for name, build in names.CLASSIFICATION_METRICS.items()})
                for _ in domains
            )
            module.counts[split] = nn.ModuleList(SumMetric() for _ in domains)

    def training_step(self, module, batch):
        images, labels, domains = module.merge_domains(batch)
        loss, logs = module.training_loss(images, labels, domains)
        return loss, logs, len(labels)

    def eval_step(self, module, split: str, batch, dataloader_idx: int) -> None:
        images, labels = batch
        if len(labels):
            logits = module(images)
            for metric in module.metrics[split][dataloader_idx].values():
                metric.update(logits, labels)
        # a fill on the device (torch.tensor(n, device=...) would be a blocking host-to-device copy)
        module.counts[split][dataloader_idx].update(torch.full((), float(len(labels)), device=labels.device))

    def epoch_end(self, module, split: str) -> None:
        values: dict[str, list[torch.Tensor]] = {}  # metric name -> its value per domain
        for domain, metrics, count in zip(module.eval_domains[split], module.metrics[split], module.counts[split]):
            for name, metric in metrics.items():
                value = metric.compute()
                metric.reset()
                values.setdefault(name, []).append(value)
                # synced already; sync_dist silences DDP's warning
                module.log(names.key(split, name, domain), value, sync_dist=True)
            module.log(names.key(split, names.COUNT, domain), count.compute(), sync_dist=True)  # summed already
            count.reset()
        for name, per_domain in values.items():
            module.log(names.key(split, name), torch.stack(per_domain).mean(),
                       prog_bar=split == "val" and name == names.ACCURACY, sync_dist=True)

    def report(self, **kwargs):
        return DomainReport(**kwargs)
