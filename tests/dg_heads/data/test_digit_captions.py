"""DigitCaptions: five captions naming a digit and its rotation, fixed disjoint splits of scikit-learn's
digits (500 / 100 / 100, the same every call), each image the digit it captions, rendered as RGB 32x32."""

from __future__ import annotations

import numpy as np
import pytest

from dg_heads.data import digit_captions
from dg_heads.data.errors import DGHeadsError


def test_the_five_captions_of_a_digit_at_a_rotation():
    assert digit_captions.captions(7, 30) == [
        "a handwritten seven turned by 30 degrees",
        "the digit 7, rotated 30 degrees",
        "a photo of the number seven, tilted 30 degrees",
        "an image of a 7 at an angle of 30 degrees",
        "a seven written by hand, turned 30 degrees",
    ]
    assert digit_captions.captions(0, 0)[4] == "an upright handwritten zero"


def test_fixed_disjoint_splits_and_an_unknown_one_refused():
    rows = {split: digit_captions.split_rows(split) for split in ("train", "val", "test")}
    assert {split: len(r) for split, (r, _) in rows.items()} == {"train": 500, "val": 100, "test": 100}
    all_rows = np.concatenate([r for r, _ in rows.values()])
    assert len(set(all_rows.tolist())) == 700 and all_rows.min() >= 0 and all_rows.max() < 1797
    for split, (r, angles) in rows.items():
        again = digit_captions.split_rows(split)
        assert np.array_equal(again[0], r) and np.array_equal(again[1], angles)
        assert set(angles.tolist()) <= set(digit_captions.ANGLES)
    assert len(set(rows["train"][1].tolist())) == 6  # every rotation drawn
    with pytest.raises(DGHeadsError, match=r"digit_captions has no split 'dev'; expected one of \['train', 'val', "):
        digit_captions.split_rows("dev")


def test_each_image_is_the_digit_its_captions_name():
    from sklearn.datasets import load_digits

    digits = load_digits()
    reader, caps = digit_captions.load_split("test")
    rows, angles = digit_captions.split_rows("test")
    assert len(caps) == len(reader.ids) == 100 and all(len(c) == 5 for c in caps)
    for i in (0, 1, 99):
        assert f"the digit {digits.target[rows[i]]}, rotated {angles[i]} degrees" == caps[i][1]
        assert reader.ids[i] == f"{rows[i]:04d}_{angles[i]}" and reader.describe(i) == f"digit_captions image " \
            f"{reader.ids[i]}"
    upright = int(np.flatnonzero(angles == 0)[0])  # an unrotated one: its pixels are sklearn's, upsampled 4x
    image = reader.read(upright)
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image)[..., 0].astype(float)
    means = pixels.reshape(8, 4, 8, 4).mean(axis=(1, 3))  # back to 8x8: each cell the mean of its 4x4 block
    expected = digits.images[rows[upright]] * 255 / 16
    assert np.corrcoef(means.ravel(), expected.ravel())[0, 1] > 0.9
