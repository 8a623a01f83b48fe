"""One sample table for every source, and the Dataset that reads images through it.

A DomainBed folder and a Hugging Face dataset both become a `SampleTable`: an Arrow table of
rows `(domain, label, id)` grouped by domain in DomainBed's env order and, within a domain, in
DomainBed's sample order (class, then file), plus a reader that turns a row into an image.
The DataModule, the split manifest and `dg-heads splits` only ever see this table, so both
sources split and train identically.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol, get_args

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset

from dg_heads.data.errors import DGHeadsError

log = logging.getLogger("dg_heads.data")

BadImagePolicy = Literal["skip", "error"]
BAD_IMAGE_POLICIES: tuple[str, ...] = get_args(BadImagePolicy)


class ImageReader(Protocol):
    def read(self, row: int) -> Image.Image: ...

    def describe(self, row: int) -> str: ...


@dataclass
class SampleTable:
    """Rows `(domain, label, id)`: `domain` indexes `domains`, `label` indexes `classes`."""

    classes: list[str]
    domains: list[str]
    table: pa.Table
    reader: ImageReader
    notes: list[str] = field(default_factory=list)  # documented skips, with counts

    def __post_init__(self) -> None:
        self.domain_of = self.table.column("domain").to_numpy().astype(np.int64)
        self.labels = self.table.column("label").to_numpy().astype(np.int64)
        self.ids = self.table.column("id")

    def rows_of(self, domain: str) -> np.ndarray:
        """Row numbers of one domain, in DomainBed's sample order."""
        return np.flatnonzero(self.domain_of == self.domains.index(domain))

    def ids_of(self, rows: np.ndarray) -> list[str]:
        return self.ids.take(pa.array(rows, type=pa.int64())).to_pylist()


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode fully (truncated files fail here, not later) and convert to RGB."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.load()
        return image.convert("RGB")


class FolderReader:
    """Images under a dataset folder, by the relative path in the `id` column."""

    def __init__(self, dataset_dir: Path, ids: pa.ChunkedArray) -> None:
        self.dataset_dir, self.ids = dataset_dir, ids

    def describe(self, row: int) -> str:
        return str(self.dataset_dir / self.ids[row].as_py())

    def read(self, row: int) -> Image.Image:
        return open_rgb(self.describe(row))


class TableDataset(Dataset):
    """The images of some rows of a table. An unreadable image is skipped (`None`, dropped by
    `collate_skipping`, named in the log) or, with `bad_images="error"`, raises naming it."""

    def __init__(self, table: SampleTable, rows: np.ndarray, transform: Callable, bad_images: BadImagePolicy = "skip",
                 with_row: bool = False):
        if bad_images not in BAD_IMAGE_POLICIES:
            raise DGHeadsError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        self.table, self.rows, self.transform, self.bad_images = table, np.asarray(rows), transform, bad_images
        self.with_row = with_row  # also yield each sample's table row (its id, domain): for predictions

    def rows_view(self) -> "TableDataset":
        """The same samples, each also with its table row."""
        return TableDataset(self.table, self.rows, self.transform, self.bad_images, with_row=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        try:
            image = self.table.reader.read(row)
        except (OSError, SyntaxError, ValueError) as error:
            where = self.table.reader.describe(row)
            if self.bad_images == "error":
                raise DGHeadsError(f"cannot read image {where}: {error}") from None
            log.warning("skipped unreadable image %s: %s", where, error)
            return None
        if self.with_row:
            return self.transform(image), int(self.table.labels[row]), row
        return self.transform(image), int(self.table.labels[row])


def collate_skipping(samples: list) -> tuple[torch.Tensor, ...]:
    """Stack a batch `(images, labels[, rows])`, leaving out skipped (unreadable) samples."""
    kept = [s for s in samples if s is not None]
    if not kept:
        width = len(next((s for s in samples if s is not None), (0, 0)))
        return (torch.empty(0, dtype=torch.uint8), *(torch.empty(0, dtype=torch.long) for _ in range(width - 1)))
    return (torch.stack([s[0] for s in kept]),
            *(torch.tensor([s[i] for s in kept], dtype=torch.long) for i in range(1, len(kept[0]))))


def build_table(classes: list[str], domains: list[str], domain: list[int], label: list[int],
                ids: list[str], extra: dict[str, list] | None = None) -> pa.Table:
    """An Arrow table in DomainBed order: by domain index, then label, then id."""
    columns = {"domain": pa.array(domain, pa.int16()), "label": pa.array(label, pa.int32()),
               "id": pa.array(ids, pa.string()), **{k: pa.array(v) for k, v in (extra or {}).items()}}
    table = pa.table(columns)
    return table.sort_by([("domain", "ascending"), ("label", "ascending"), ("id", "ascending")])
