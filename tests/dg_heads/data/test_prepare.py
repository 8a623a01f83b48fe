"""`dg-heads prepare`: a copy checked against the registry (what is missing, extra or misfiled), a download
checked against its checksum and unpacked."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from dg_heads.data.prepare import prepare, verify_copy
from dg_heads.data.registry import Archive, get_dataset
from dg_heads.errors import DGHeadsError
from tests.conftest import make_benchmark


def test_prepare_verifies_the_builtin_dataset_complete(data_root):
    report = prepare(get_dataset("rotated_digits"), data_root, say=lambda _: None)
    assert report.ok and report.counts["75"]["seven"] > 0 and sum(report.counts["0"].values()) == 1797


def test_prepare_says_what_is_missing_or_extra(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=1, size=4, domains=["art_painting", "cartoon", "photo"])
    (tmp_path / "PACS/photo/unicorn").mkdir()
    (tmp_path / "PACS/__MACOSX").mkdir()
    lines = []
    report = prepare(get_dataset("pacs"), tmp_path, say=lines.append)
    text = "\n".join(report.problems + report.notes)
    assert "missing domain folder(s) ['sketch']" in text and "photo: extra class folder(s) ['unicorn']" in text
    assert "extra folder(s) ['__MACOSX']" in text and "art_painting: 7 images, expected 2048 (2041 missing)" in text
    assert lines == []  # a copy exists: no download, no manual steps


def test_prepare_finds_a_misfiled_image_by_its_class_counts(tmp_path):
    """An image moved to the wrong class keeps the domain's total: only per-class counts see it."""
    pacs = get_dataset("pacs")
    copy = make_benchmark(tmp_path, "pacs", per_class=2, size=4)
    as_made = {d: {c: 2 for c in pacs.classes} for d in pacs.domains}
    info = type(pacs)(**{**pacs.__dict__, "counts": {d: 2 * pacs.num_classes for d in pacs.domains},
                         "class_counts": as_made})
    assert verify_copy(info, copy).ok
    (copy / "sketch/dog/000.png").rename(copy / "sketch/horse/misfiled.png")
    report = verify_copy(info, copy)
    assert report.problems == ["sketch/dog: 1 images, expected 2", "sketch/horse: 3 images, expected 2"]


def _zip_of_domain(tmp_path: Path) -> tuple[Path, str]:
    src = make_benchmark(tmp_path / "src", "pacs", per_class=1, size=4, domains=["photo"])
    archive = tmp_path / "photo.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((src / "photo").rglob("*.png")):
            z.write(f, f.relative_to(src))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_prepare_downloads_checks_the_checksum_and_unpacks(tmp_path, monkeypatch):
    archive, digest = _zip_of_domain(tmp_path)
    info = get_dataset("pacs")
    good = type(info)(**{**info.__dict__, "archives": (Archive(archive.as_uri(), digest, provides="photo"),)})
    report = prepare(good, tmp_path / "root", say=lambda _: None)
    assert (tmp_path / "root/PACS/photo/dog/000.png").exists()
    assert "missing domain folder(s) ['art_painting', 'cartoon', 'sketch']" in report.problems[0]

    bad = type(info)(**{**info.__dict__, "archives": (Archive(archive.as_uri(), "0" * 64, provides="photo"),)})
    with pytest.raises(DGHeadsError, match=r"sha256 .* != expected 0000.*nothing was unpacked"):
        prepare(bad, tmp_path / "other", say=lambda _: None)
    assert not (tmp_path / "other/PACS/photo").exists()


def test_prepare_decodes_what_it_counts(tmp_path):
    """A file named `.png` that is not an image (an HTML error page, a Git LFS pointer) is a problem."""
    from tests.conftest import make_domainbed, run_main

    copy = make_domainbed(tmp_path, "lab_cams", {"north": ["cat", "dog"], "south": ["cat", "dog"]}, per_class=2)
    assert run_main("prepare", str(copy), cwd=tmp_path).returncode == 0
    (copy / "south/dog/001.png").write_text("<html>404 Not Found</html>\n")
    result = run_main("prepare", str(copy), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "problem: 1 file(s) named as images do not decode (e.g. south/dog/001.png: UnidentifiedImageError" \
        in result.stdout
    make_benchmark(tmp_path, "vlcs", size=4)
    (tmp_path / "VLCS/SUN09/dog/000.png").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    result = run_main("prepare", "vlcs", "--root", str(tmp_path), cwd=tmp_path)
    assert "1 file(s) named as images do not decode (e.g. SUN09/dog/000.png" in result.stdout
