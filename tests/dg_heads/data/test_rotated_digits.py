"""RotatedDigits' build (on the first 20 of scikit-learn's digits, for speed): DomainBed's layout, six
rotation domains x ten class folders, each image under its digit's class, the unrotated one the digit
itself; a complete copy is left alone, a stale partial one replaced."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dg_heads.data import rotated_digits


@pytest.fixture()
def few_digits(monkeypatch):
    import sklearn.datasets

    digits = sklearn.datasets.load_digits()
    few = SimpleNamespace(data=digits.data[:20], target=digits.target[:20], images=digits.images[:20])
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: few)
    return few


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))


def test_the_domainbed_layout_with_each_digit_under_its_class(tmp_path, few_digits):
    folder = rotated_digits.build(tmp_path / "RotatedDigits")
    assert folder == tmp_path / "RotatedDigits" and (folder / ".complete").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RotatedDigits"]  # no temporary copy left
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(["0", "15", "30", "45", "60", "75"])
    expected = sorted(f"{angle}/{names[label]}/{i:04d}.png" for angle in (0, 15, 30, 45, 60, 75)
                      for i, label in enumerate(few_digits.target))
    assert _files(folder) == expected
    for angle in ("0", "75"):
        assert sorted(p.name for p in (folder / angle).iterdir()) == sorted(names)  # empty classes too
    image = Image.open(folder / "0" / names[few_digits.target[3]] / "0003.png")
    assert image.mode == "L" and image.size == (32, 32)
    upright = np.asarray(image, dtype=float)
    cells = upright.reshape(8, 4, 8, 4).mean(axis=(1, 3))  # back to 8x8
    assert np.corrcoef(cells.ravel(), few_digits.images[3].ravel())[0, 1] > 0.9
    turned = np.asarray(Image.open(folder / "75" / names[few_digits.target[3]] / "0003.png"), dtype=float)
    assert np.abs(turned - upright).mean() > 10  # another domain: the digit turned


def test_a_complete_copy_is_kept_and_a_stale_partial_one_replaced(tmp_path, few_digits, monkeypatch):
    complete = tmp_path / "complete"
    complete.mkdir()
    (complete / ".complete").touch()
    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: pytest.fail("a complete copy was rebuilt"))
    assert rotated_digits.build(complete) == complete and _files(complete) == []
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: few_digits)
    stale = tmp_path / "stale"
    (stale / "0" / "zero").mkdir(parents=True)
    (stale / "0" / "zero" / "junk.png").write_bytes(b"half")  # an interrupted older build: no marker
    rotated_digits.build(stale)
    assert (stale / ".complete").exists() and len(_files(stale)) == 6 * 20 and "0/zero/junk.png" not in _files(stale)
