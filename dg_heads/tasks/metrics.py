"""Every metric name a task logs, in one place: the checkpoint monitor, the reports (tables,
`metrics_<stage>.json`, TensorBoard's HParams tab) and `collect` read them from here.

classification  for every entry of `CLASSIFICATION_METRICS` (`acc` built in): `<stage>/<name>/<domain>`
                per evaluation domain and `<stage>/<name>` their mean; `<stage>/n/<domain>` the
                images scored; selection `val/acc` (max)
retrieval       `<stage>/i2t_r1` ... `<stage>/t2i_r10` (recall@k in percent, CLIP_benchmark's
                semantics) and `<stage>/rsum` (their sum, 0..600); with several evaluation
                datasets `<stage>/<dataset>/<name>` each and `<stage>/<name>` their mean; the
                images scored `<stage>/n/<dataset>`; selection `val/rsum` (max)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchmetrics import Metric

STAGES = ("val", "test")

ACCURACY = "acc"
COUNT = "n"  # images scored per evaluation domain / dataset



def _accuracy(num_classes: int) -> Metric:
    from torchmetrics.classification import MulticlassAccuracy  # (imported on use: `collect` reads names only)

    return MulticlassAccuracy(num_classes=num_classes, average="micro")


# A classification metric is one entry here: name -> a torchmetrics `Metric` for one evaluation
# domain, built from the number of classes and updated with (logits [N, classes], labels [N]).
# `ClassificationTask` builds one per domain and stage, logs `<stage>/<name>/<domain>` and
# `<stage>/<name>` (the mean over domains, synced under DDP), and the report writes them into
# `metrics_<stage>.json` (README: "Adding a metric").
CLASSIFICATION_METRICS: dict[str, Callable[[int], Metric]] = {ACCURACY: _accuracy}

RECALL_KS = (1, 5, 10)
DIRECTIONS = ("i2t", "t2i")  # image -> text (a query image, its captions to find), text -> image
RECALLS = tuple(f"{d}_r{k}" for d in DIRECTIONS for k in RECALL_KS)  # i2t_r1 ... t2i_r10
RSUM = "rsum"
RETRIEVAL_METRICS = (*RECALLS, RSUM)

# task -> (the validation metric that selects checkpoints, its mode)
SELECTION = {"classification": (f"val/{ACCURACY}", "max"), "retrieval": (f"val/{RSUM}", "max")}


def key(stage: str, name: str, dataset: str | None = None) -> str:
    """`val/rsum`, `test/flickr30k/i2t_r1`, `val/acc/<domain>` is `key("val", "acc", domain)`
    for classification (the domain after the name, as dg-heads always wrote it)."""
    if dataset is None:
        return f"{stage}/{name}"
    per_domain = name == COUNT or name in CLASSIFICATION_METRICS
    return f"{stage}/{name}/{dataset}" if per_domain else f"{stage}/{dataset}/{name}"
