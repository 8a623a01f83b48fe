"""Tasks: what a batch holds, how a model scores it, which metrics it logs and which one selects
checkpoints. The data chooses the task (a DataModule's `task` class attribute; none means
`classification`); every method (`dg_heads.methods`) works with either through its `Task`.

    classification.py  DomainBed DG: class-prompt logits, per-domain accuracy, `val/acc`
    retrieval.py       image-text retrieval: image and caption embeddings, Recall@1/5/10 both
                       ways and RSUM (CLIP_benchmark's semantics, exact under DDP), `val/rsum`
    metrics.py         every metric name, and the selection metric of each task (one place);
                       a classification metric is one entry of its `CLASSIFICATION_METRICS`

A third task is one new file here (a `Task` subclass with its `name`: `setup`, `training_step`,
`eval_step`, `epoch_end`, `report`; every module of this package is imported and its tasks
registered by name, nothing to list), its metric names and selection metric in `metrics.py`, a
DataModule with `task = "<name>"`, and configs (the README's "Extending dg-heads").
"""

from __future__ import annotations

import importlib
import pkgutil

from dg_heads.errors import DGHeadsError
from dg_heads.tasks import metrics
from dg_heads.tasks.base import Task

DEFAULT_TASK = "classification"


def task_name(datamodule) -> str:
    """The task a DataModule (or DataModule class) serves: its `task` attribute, else classification."""
    return getattr(datamodule, "task", None) or DEFAULT_TASK


def task_named(name: str) -> Task:
    """The `Task` called `name` (what a checkpoint stores)."""
    for module in pkgutil.iter_modules(__path__):  # every task file registers its Task subclasses
        importlib.import_module(f"{__name__}.{module.name}")
    tasks = Task.registry
    if name not in tasks:
        raise DGHeadsError(f"the data's task {name!r} is not one of {sorted(tasks)}")
    return tasks[name]()


def task_of(datamodule) -> Task:
    """The `Task` of a DataModule (or DataModule class)."""
    return task_named(task_name(datamodule))


__all__ = ["DEFAULT_TASK", "Task", "metrics", "task_name", "task_named", "task_of"]
