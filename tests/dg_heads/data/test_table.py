"""The sample table (`dg_heads.data.table`): rows in DomainBed's order (domain, class, file), a domain's
rows and ids, images read fully and as RGB, an unreadable one skipped (named in the log) or one error
naming it, and batches stacked without the skipped samples."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from dg_heads.data.errors import DGHeadsError
from dg_heads.data.table import FolderReader, SampleTable, TableDataset, build_table, collate_skipping, open_rgb


def _png(mode: str = "L", size: int = 6, colour=128) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (size, size), colour).save(out, format="PNG")
    return out.getvalue()


class _Reader:
    """Row 1 cannot be read."""

    def read(self, row):
        if row == 1:
            raise OSError("truncated")
        return Image.new("RGB", (2, 2), (row, 0, 0))

    def describe(self, row):
        return f"picture {row}"


def _table() -> SampleTable:
    table = build_table(["cat", "dog"], ["photo", "sketch"], domain=[1, 0, 1, 0, 0], label=[0, 1, 0, 0, 1],
                        ids=["s/b.png", "p/d2.png", "s/a.png", "p/x.png", "p/d1.png"])
    return SampleTable(["cat", "dog"], ["photo", "sketch"], table, _Reader())


def test_rows_in_domainbed_order_and_a_domains_rows_and_ids():
    table = _table()
    # by domain, then class, then file
    assert table.table.column("id").to_pylist() == ["p/x.png", "p/d1.png", "p/d2.png", "s/a.png", "s/b.png"]
    assert table.domain_of.tolist() == [0, 0, 0, 1, 1] and table.labels.tolist() == [0, 1, 1, 0, 0]
    assert table.rows_of("sketch").tolist() == [3, 4]
    assert table.ids_of(np.array([4, 0])) == ["s/b.png", "p/x.png"]


def test_an_unreadable_image_is_skipped_and_named_or_one_error(caplog):
    table = _table()
    dataset = TableDataset(table, np.array([0, 1, 2]), transform=lambda image: torch.tensor(image.getpixel((0, 0))))
    assert len(dataset) == 3
    assert dataset[0][1] == 0 and dataset[2][0].tolist() == [2, 0, 0] and dataset[2][1] == 1
    with caplog.at_level(logging.WARNING, logger="dg_heads.data"):
        assert dataset[1] is None
    assert "skipped unreadable image picture 1: truncated" in caplog.text
    assert dataset.rows_view()[2][2] == 2  # with its table row
    strict = TableDataset(table, np.array([1]), transform=lambda image: image, bad_images="error")
    with pytest.raises(DGHeadsError, match=r"^cannot read image picture 1: truncated$"):
        strict[0]
    with pytest.raises(DGHeadsError, match=r"bad_images must be one of \('skip', 'error'\), got 'ignore'"):
        TableDataset(table, np.array([0]), transform=lambda image: image, bad_images="ignore")


def test_a_batch_is_stacked_without_the_skipped_samples():
    images, labels = collate_skipping([(torch.zeros(3, 2, 2), 4), None, (torch.ones(3, 2, 2), 7)])
    assert images.shape == (2, 3, 2, 2) and images[1].sum() == 12 and labels.tolist() == [4, 7]
    images, labels, rows = collate_skipping([None, (torch.ones(1), 1, 9)])
    assert rows.tolist() == [9] and labels.dtype == torch.long
    empty = collate_skipping([None, None])
    assert [tuple(t.shape) for t in empty] == [(0,), (0,)] and empty[0].dtype == torch.uint8


def test_images_are_read_fully_as_rgb(tmp_path):
    assert open_rgb(_png("L")).mode == "RGB" and open_rgb(_png("LA", colour=(90, 255))).getpixel((0, 0)) == (90, 90, 90)
    (tmp_path / "p").mkdir()
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(noise, format="PNG")
    (tmp_path / "p" / "ok.png").write_bytes(noise.getvalue())
    (tmp_path / "p" / "cut.png").write_bytes(noise.getvalue()[:2000])  # header intact, pixel data cut short
    ids = build_table(["c"], ["d"], [0, 0], [0, 0], ["p/ok.png", "p/cut.png"]).column("id")  # sorted: cut, ok
    reader = FolderReader(tmp_path, ids)
    assert reader.describe(0) == str(tmp_path / "p" / "cut.png")
    assert reader.read(1).size == (64, 64) and reader.read(1).mode == "RGB"
    with pytest.raises(OSError):  # at reading, not later when the pixels are used
        reader.read(0)
