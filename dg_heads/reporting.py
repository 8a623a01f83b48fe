"""Per-domain accuracy tables, printed at the end of a run and saved beside its logs."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def accuracy_metrics(metrics: dict[str, object]) -> dict[str, float]:
    """The `val/acc*` and `test/acc*` entries as plain floats."""
    out = {}
    for key, value in metrics.items():
        if key.startswith(("val/acc", "test/acc")):
            out[key] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return dict(sorted(out.items()))


def format_table(accs: dict[str, float], source_domains: list[str], test_domains: list[str]) -> str:
    """A per-domain table: each domain's role (source `out` split or held-out test) and accuracy."""
    rows = [("domain", "role", "accuracy")]
    for domain in source_domains:
        if f"val/acc/{domain}" in accs:
            rows.append((domain, "source (val)", f"{100 * accs[f'val/acc/{domain}']:.2f}"))
    if "val/acc" in accs:
        rows.append(("mean", "source (val)", f"{100 * accs['val/acc']:.2f}"))
    for domain in test_domains:
        if f"test/acc/{domain}" in accs:
            rows.append((domain, "held out (test)", f"{100 * accs[f'test/acc/{domain}']:.2f}"))
    if "test/acc" in accs:
        rows.append(("mean", "held out (test)", f"{100 * accs['test/acc']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_dir(trainer) -> Path | None:
    """The run folder (the logger's version folder), read without a collective call.

    `Trainer.log_dir` broadcasts from rank 0, so calling it on rank 0 alone deadlocks DDP.
    """
    logger = trainer.logger
    path = getattr(logger, "log_dir", None) if logger is not None else trainer.default_root_dir
    return Path(path) if path else None


def write_metrics(log_dir: str | Path, stage: str, accs: dict[str, float], extra: dict | None = None) -> Path:
    """`metrics_<stage>.json` in the run folder: what result collection reads."""
    path = Path(log_dir) / f"metrics_{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**accs, **(extra or {})}, indent=2, sort_keys=True))
    tmp.replace(path)  # atomic: a killed run never leaves half a file
    return path
