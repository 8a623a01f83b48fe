"""DigitCaptions: a built-in image-caption dataset for retrieval, from scikit-learn's bundled digits.

No download and nothing written to disk: each image is one of the 1,797 real 8x8 handwritten
digits, upsampled to 32x32 and rotated as RotatedDigits does (`rotated_digits._digit_image`), and
each has five captions naming its digit and its rotation ("a handwritten seven turned by 30
degrees", "the digit 7, rotated 30 degrees", ...), so text-to-image and image-to-text retrieval
are learnable and a zero-shot model starts above chance.

Fixed splits, as Karpathy's are for Flickr30k and MS-COCO: the digits are shuffled once (seed 0)
and cut into train, val and test (`SPLIT_SIZES`), each image's rotation drawn once from `ANGLES`
with the same generator. The same images and captions on every machine and in every process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from dg_heads.data.rotated_digits import CLASS_NAMES, _digit_image

NAME = "digit_captions"
ANGLES = (0, 30, 60, 90, 120, 150)
SPLIT_SIZES = {"train": 500, "val": 100, "test": 100}
CAPTIONS_PER_IMAGE = 5
SEED = 0


def captions(digit: int, angle: int) -> list[str]:
    """The five captions of a digit at a rotation (counter-clockwise, in degrees)."""
    word = CLASS_NAMES[digit]
    return [
        f"a handwritten {word} turned by {angle} degrees",
        f"the digit {digit}, rotated {angle} degrees",
        f"a photo of the number {word}, tilted {angle} degrees",
        f"an image of a {digit} at an angle of {angle} degrees",
        f"an upright handwritten {word}" if angle == 0 else f"a {word} written by hand, turned {angle} degrees",
    ]


@dataclass
class DigitReader:
    """Renders the images of one split on demand (no files): `read(i)` is image `i` as RGB."""

    pixels: np.ndarray  # [N, 64] sklearn's 0..16 intensities
    angles: np.ndarray  # [N] degrees
    ids: list[str]

    def describe(self, i: int) -> str:
        return f"{NAME} image {self.ids[i]}"

    def read(self, i: int) -> Image.Image:
        return _digit_image(self.pixels[i], int(self.angles[i])).convert("RGB")


def split_rows(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(sklearn digit indices, angles) of a split, fixed by `SEED`."""
    if split not in SPLIT_SIZES:
        from dg_heads.data.errors import DGHeadsError

        raise DGHeadsError(f"{NAME} has no split {split!r}; expected one of {list(SPLIT_SIZES)}")
    rng = np.random.default_rng(SEED)
    order = rng.permutation(1797)
    angles = rng.choice(ANGLES, size=1797)
    start = 0
    for name, size in SPLIT_SIZES.items():
        if name == split:
            return order[start:start + size], angles[start:start + size]
        start += size
    raise AssertionError(split)


def load_split(split: str) -> tuple[DigitReader, list[list[str]]]:
    """A split's image reader and every image's captions (in a fixed order)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows, angles = split_rows(split)
    ids = [f"{int(r):04d}_{int(a)}" for r, a in zip(rows, angles)]
    reader = DigitReader(digits.data[rows], np.asarray(angles), ids)
    return reader, [captions(int(digits.target[r]), int(a)) for r, a in zip(rows, angles)]
