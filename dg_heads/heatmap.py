"""Blocks x heads matrices (gates, head importance, ablation coefficients) as images and files
a person can read: TensorBoard images without a plotting dependency, JSON and CSV beside them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from dg_heads.run_files import write_run_file

# A small perceptually ordered colour ramp (dark blue -> teal -> yellow), interpolated linearly.
_RAMP = torch.tensor([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55],
                      [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]])


def heatmap_image(matrix: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """[3, rows*cell, cols*cell] float image in [0, 1]; each value scaled by the matrix's range."""
    m = matrix.detach().float().cpu()
    span = (m.max() - m.min()).clamp_min(1e-12)
    t = ((m - m.min()) / span) * (len(_RAMP) - 1)
    low = t.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (t - low).unsqueeze(-1)
    rgb = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac  # [rows, cols, 3]
    return rgb.permute(2, 0, 1).repeat_interleave(cell, 1).repeat_interleave(cell, 2)


def matrix_files(matrix: torch.Tensor, row_name: str = "block") -> dict[str, str]:
    """The texts of `.json` ({row: [values]}) and `.csv` (a row per block, a column per head)."""
    m = matrix.detach().float().cpu()
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([row_name] + [f"head_{h}" for h in range(m.shape[1])])
    writer.writerows([[i] + [f"{v:.6f}" for v in row.tolist()] for i, row in enumerate(m)])
    return {".json": json.dumps({str(i): [round(v, 6) for v in row.tolist()] for i, row in enumerate(m)}, indent=1),
            ".csv": text.getvalue()}


def write_run_matrix(trainer, stem: str, matrix: torch.Tensor, row_name: str = "block") -> list[Path]:
    """`<stem>.json` and `<stem>.csv` in the run folder, on rank 0 (`run_files.write_run_file`)."""
    texts = matrix_files(matrix, row_name)
    return [p for suffix, text in texts.items() if (p := write_run_file(trainer, stem + suffix, text)) is not None]


def log_heatmap(module, tag: str, matrix: torch.Tensor) -> None:
    """Add the heatmap to a TensorBoard logger of `module`'s trainer, if there is one."""
    logger = getattr(module, "logger", None)
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(tag, heatmap_image(matrix), global_step=module.global_step)
