"""Per-domain accuracy tables and prediction files: what `dg_heads.callbacks` print and write."""

from __future__ import annotations

import csv
import io

import torch

from dg_heads.errors import DGHeadsError
from dg_heads.tasks import metrics as names


def accuracy_metrics(metrics: dict[str, object]) -> dict[str, float]:
    """The classification metrics (`val/acc*`, `test/acc*` and every other entry of
    `names.CLASSIFICATION_METRICS`) and the images scored per domain (`val/n/*`, `test/n/*`) as
    plain floats."""
    out = {}
    logged = (*(f"{name}/" for name in names.CLASSIFICATION_METRICS), names.COUNT + "/")
    for key, value in metrics.items():
        stage, _, rest = key.partition("/")
        if stage in names.STAGES and (rest in names.CLASSIFICATION_METRICS or rest.startswith(logged)):
            out[key] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return dict(sorted(out.items()))


def format_table(accs: dict[str, float], source_domains: list[str], test_domains: list[str]) -> str:
    """A per-domain table: each domain's role (source `out` split or held-out test), accuracy
    and the number of images scored."""
    rows = [("domain", "role", "accuracy", "images")]
    for split, domains, role in (("val", source_domains, "source (val)"), ("test", test_domains, "held out (test)")):
        for domain in domains:
            acc = names.key(split, names.ACCURACY, domain)
            if acc in accs:
                n = accs.get(names.key(split, names.COUNT, domain))
                rows.append((domain, role, f"{100 * accs[acc]:.2f}", "" if n is None else f"{int(n)}"))
        if names.key(split, names.ACCURACY) in accs:
            rows.append(("mean", role, f"{100 * accs[names.key(split, names.ACCURACY)]:.2f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def skipped_images(accs: dict[str, float], expected: dict[str, dict[str, int]],
                   limited: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Domains where fewer images were scored than the split holds (unreadable images skipped).

    A domain of which no image was read is an error: a score over nothing is not a result.
    `limited`: the splits the trainer scored only part of (`limit_val_batches` / `limit_test_batches`):
    their counts say nothing about unreadable images, so they are not compared."""
    notes = []
    for split, sizes in expected.items():
        if split in limited:
            continue
        for domain, size in sizes.items():
            n = accs.get(f"{split}/n/{domain}")
            if n is not None and int(n) == 0 and size > 0:
                raise DGHeadsError(f"{split} domain {domain!r}: none of its {size} images could be read "
                                   f"(every one named in the log); its accuracy would mean nothing")
            if n is not None and int(n) != size:
                notes.append(f"{split} domain {domain!r}: scored {int(n)} of {size} images "
                             f"({size - int(n)} unreadable, skipped; named in the log)")
    return notes


def predictions_csv(shares: list[torch.Tensor], datamodule) -> str:
    """`predictions.csv`: id, domain, label, predicted, probability (of the predicted class), one
    row per image in the table's order (DomainBed's: domain, class, file), whatever the number of
    processes that predicted it; labels and predictions are class folder names. `shares`: each
    process's `[n, 3]` (table row, class, probability)."""
    rows = torch.cat([s.to(torch.float64) for s in shares]) if shares else torch.empty(0, 3, dtype=torch.float64)
    rows = rows[rows[:, 0].argsort()]
    classes = list(datamodule.folder_class_names)
    described = datamodule.describe_rows(rows[:, 0].long().tolist())
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["id", "domain", "label", "predicted", "probability"])
    for (sample_id, domain, label), pred, prob in zip(described, rows[:, 1].long().tolist(), rows[:, 2].tolist()):
        writer.writerow([sample_id, domain, label, classes[pred], f"{prob:.6f}"])
    return text.getvalue()


def limited_splits(trainer) -> set[str]:
    """The evaluation splits the trainer scores only part of: a `limit_*_batches` other than 1.0
    (an int is a number of batches, so `1` limits where `1.0` does not)."""
    limits = {"val": trainer.limit_val_batches, "test": trainer.limit_test_batches}
    return {split for split, limit in limits.items()
            if limit is not None and not (isinstance(limit, float) and limit == 1.0)}
