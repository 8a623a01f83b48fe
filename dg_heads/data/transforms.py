"""Image transforms: CLIP's own preprocessing for evaluation, a configurable training augmentation.

Evaluation is open_clip's CLIP preprocessing (bicubic resize of the short side, centre crop,
CLIP mean/std). Training augmentation, by name:
- `domainbed`: DomainBed's set (random resized crop, scale 0.7-1, horizontal flip, colour jitter
  0.3, 10% grayscale), normalised with CLIP's statistics instead of ImageNet's (DomainBed's
  ImageNet normalisation is the patch CLIP DG codebases ask users to make by hand);
- `clip`: open_clip's training transform (random resized crop, scale 0.9-1);
- `none`: the evaluation transform.

What the DataLoaders use (`uint8=True`, the default): the same transforms up to the last PIL
image, then `PILToTensor`: images cross worker processes (and the host-to-device copy) as uint8
`[3, H, W]`, a quarter of float32's bytes, and are normalised on the device by `normalize_uint8`
(`x / 255`, then CLIP's mean/std: the arithmetic `ToTensor` + `Normalize` do on the host, so the
result is the same to float rounding). dg-heads models call it on any uint8 input themselves
(`DGModule.image_features`, `DGModule.prepare_images`); a float input is taken as normalised.
`uint8=False` gives the float transforms (normalised on the host), as before.
"""

from __future__ import annotations

from typing import Callable, Literal, get_args

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import image_transform
from torchvision import transforms as T

from dg_heads.data.errors import DGHeadsError

Augmentation = Literal["domainbed", "clip", "none"]
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
CLIP_MEAN, CLIP_STD = tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


def normalize_uint8(
    images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 `[..., 3, H, W]` images -> float32 normalised with CLIP's mean/std, where they are.

    `mean`, `std` (shape `[3, 1, 1]`, on the images' device) may be passed to save building them."""
    if mean is None or std is None:
        mean = torch.tensor(CLIP_MEAN, device=images.device).view(3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std  # ToTensor's x / 255, then Normalize's (x - m) / s


def _as_uint8(transform: T.Compose) -> T.Compose:
    """The same transform ending in `PILToTensor` instead of `ToTensor` + CLIP's `Normalize`."""
    *head, to_tensor, normalize = transform.transforms
    if not (isinstance(to_tensor, T.ToTensor) and isinstance(normalize, T.Normalize)
            and tuple(normalize.mean) == CLIP_MEAN and tuple(normalize.std) == CLIP_STD):
        raise DGHeadsError(f"cannot make a uint8 transform of {transform}: it must end in ToTensor, "
                           "Normalize(CLIP mean/std)")
    return T.Compose([*head, T.PILToTensor()])


def eval_transform(image_size: int, uint8: bool = False) -> Callable:
    transform = image_transform(image_size, is_train=False)
    return _as_uint8(transform) if uint8 else transform


def train_transform(image_size: int, augment: Augmentation, uint8: bool = False) -> Callable:
    if augment == "domainbed":
        transform = T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.7, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.3),
            T.RandomGrayscale(),
            T.ToTensor(),
            T.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
        ])
    elif augment == "clip":
        transform = image_transform(image_size, is_train=True)
    elif augment == "none":
        return eval_transform(image_size, uint8)
    else:
        raise DGHeadsError(f"train_augment must be one of {AUGMENTATIONS}, got {augment!r}")
    return _as_uint8(transform) if uint8 else transform
