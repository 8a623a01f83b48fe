"""RotatedDigits: DomainBed's RotatedMNIST protocol on scikit-learn's bundled digits.

1,797 real 8x8 handwritten digits (shipped inside scikit-learn: no download), upsampled to
32x32 and rotated by 0, 15, 30, 45, 60 and 75 degrees: six domains with a real, graded shift.
Written once in the DomainBed layout, so the same folder DataModule serves it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ANGLES = (0, 15, 30, 45, 60, 75)
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32
DONE_MARKER = ".complete"


def _digit_image(pixels: np.ndarray, angle: int) -> Image.Image:
    gray = (pixels.reshape(8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(gray, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return image.rotate(angle, resample=Image.BILINEAR, fillcolor=0)


def build(dataset_dir: Path) -> Path:
    """Write the dataset to `dataset_dir` unless a complete copy is there; return the folder.

    Written into a temporary sibling and renamed, so an interrupted build never leaves a
    half-written copy that looks complete (two processes racing both end with a full copy).
    """
    if (dataset_dir / DONE_MARKER).exists():
        return dataset_dir
    from sklearn.datasets import load_digits

    digits = load_digits()
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".rotated_digits-", dir=dataset_dir.parent))
    for angle in ANGLES:
        for name in CLASS_NAMES:
            (tmp / str(angle) / name).mkdir(parents=True)
        for i, (pixels, label) in enumerate(zip(digits.data, digits.target)):
            _digit_image(pixels, angle).save(tmp / str(angle) / CLASS_NAMES[label] / f"{i:04d}.png")
    (tmp / DONE_MARKER).touch()
    try:
        os.rename(tmp, dataset_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if dataset_dir.exists() and not (dataset_dir / DONE_MARKER).exists():
            shutil.rmtree(dataset_dir)  # a stale partial copy from an old version
            return build(dataset_dir)
    return dataset_dir
