"""Image transforms: CLIP's own preprocessing for evaluation, a configurable training augmentation.

Evaluation is open_clip's CLIP preprocessing (bicubic resize of the short side, centre crop,
CLIP mean/std). Training augmentation, by name:
- `domainbed`: DomainBed's set (random resized crop, scale 0.7-1, horizontal flip, colour jitter
  0.3, 10% grayscale), normalised with CLIP's statistics instead of ImageNet's (DomainBed's
  ImageNet normalisation is the patch CLIP DG codebases ask users to make by hand);
- `clip`: open_clip's training transform (random resized crop, scale 0.9-1);
- `none`: the evaluation transform.
"""

from __future__ import annotations

from typing import Callable

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import image_transform
from torchvision import transforms as T

from dg_heads.errors import DGHeadsError

AUGMENTATIONS = ("domainbed", "clip", "none")


def eval_transform(image_size: int) -> Callable:
    return image_transform(image_size, is_train=False)


def train_transform(image_size: int, augment: str) -> Callable:
    if augment == "domainbed":
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.7, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.3),
            T.RandomGrayscale(),
            T.ToTensor(),
            T.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
        ])
    if augment == "clip":
        return image_transform(image_size, is_train=True)
    if augment == "none":
        return eval_transform(image_size)
    raise DGHeadsError(f"train_augment must be one of {AUGMENTATIONS}, got {augment!r}")
