"""A DomainBed folder (`ROOT/<dataset>/<domain>/<class>/<image>`) as the DataModule reads it: what a copy lacks
or holds too much is named; non-image files are skipped; the index is cached until the folder changes."""

import pytest

from dg_heads.data import DomainBedDataModule
from dg_heads.errors import DGHeadsError
from tests.conftest import make_benchmark


def test_missing_root_names_the_folder(tmp_path):
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path / "nowhere"))
    with pytest.raises(DGHeadsError, match=r"nowhere/PACS does not exist.*<domain>/<class>"):
        dm.setup("fit")


def _pacs(tmp_path, **kwargs):
    make_benchmark(tmp_path, "pacs", **kwargs)
    return DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0)


def test_class_folders_that_differ_are_named(tmp_path):
    dm = _pacs(tmp_path, per_class=2)
    (tmp_path / "PACS/sketch/horse").rename(tmp_path / "PACS/sketch/hrose")
    with pytest.raises(DGHeadsError, match=r"PACS/sketch differ.*missing \['horse'\], extra \['hrose'\]"):
        dm.setup("fit")


def test_missing_domain_folder_is_named(tmp_path):
    dm = _pacs(tmp_path, domains=["art_painting", "photo", "sketch"])
    with pytest.raises(DGHeadsError, match=r"lacks the domain folder\(s\) \['cartoon'\]"):
        dm.setup("fit")


def test_empty_class_folder_is_an_incomplete_copy(tmp_path):
    dm = _pacs(tmp_path, per_class=2)
    for f in (tmp_path / "PACS/photo/guitar").iterdir():
        f.unlink()
    with pytest.raises(DGHeadsError, match=r"1 empty class folder\(s\).*\['photo/guitar'\]"):
        dm.setup("fit")


def test_non_image_files_are_skipped_and_counted(tmp_path, caplog):
    dm = _pacs(tmp_path, per_class=2)
    (tmp_path / "PACS/photo/dog/notes.txt").write_text("x")
    (tmp_path / "PACS/sketch/dog/Thumbs.db").write_bytes(b"x")
    dm.setup("fit")
    assert len(dm.table.table) == 4 * 7 * 2
    assert "skipped 2 non-image file(s)" in caplog.text


def test_folder_index_is_cached_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    import dg_heads.data.folder as folder

    make_benchmark(tmp_path, "pacs", per_class=2)
    info_args = (tmp_path / "PACS", ["art_painting", "cartoon", "photo", "sketch"],
                 ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"])
    first = folder.load_folder_table(*info_args)
    scans = []
    real_scan = folder.scan_folder
    monkeypatch.setattr(folder, "scan_folder", lambda d: scans.append(d) or real_scan(d))
    again = folder.load_folder_table(*info_args)
    assert scans == [] and again.table.equals(first.table)  # read from the memory-mapped Arrow file
    (tmp_path / "PACS/photo/dog/000.png").rename(tmp_path / "PACS/photo/dog/zzz.png")
    renamed = folder.load_folder_table(*info_args)
    assert len(scans) == 1 and "photo/dog/zzz.png" in renamed.ids.to_pylist()
