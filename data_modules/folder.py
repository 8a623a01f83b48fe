"""Index a DomainBed folder `ROOT/<dataset>/<domain>/<class>/<image>` and read its images.

Samples come in DomainBed's order (torchvision `ImageFolder`: class folders sorted, files
sorted), which the holdout split depends on. Layout mistakes are found here, at setup, and
reported with the path at fault, never later inside a dataloader worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from dg_heads.errors import DGHeadsError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class DomainIndex:
    """One domain: image paths (relative to the dataset folder) and class indices."""

    name: str
    paths: list[str]
    labels: list[int]


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def _check_same_classes(dataset_dir: Path, classes: dict[str, list[str]]) -> list[str]:
    """The class list shared by every domain; a difference names domain and classes."""
    domains = list(classes)
    reference = classes[domains[0]]
    for domain in domains[1:]:
        missing = sorted(set(reference) - set(classes[domain]))
        extra = sorted(set(classes[domain]) - set(reference))
        if missing or extra:
            raise DGHeadsError(
                f"class folders differ between domains in {dataset_dir}: {domain!r} vs "
                f"{domains[0]!r}: missing {missing}, extra {extra}; every domain needs the same classes"
            )
    return reference


def index_folder(dataset_dir: Path) -> tuple[list[str], list[DomainIndex]]:
    """Class names and one `DomainIndex` per domain folder (sorted, as DomainBed)."""
    if not dataset_dir.is_dir():
        raise DGHeadsError(
            f"dataset folder {dataset_dir} does not exist; expected the DomainBed layout "
            f"ROOT/<dataset>/<domain>/<class>/<image> (set data.root)"
        )
    domains = _subdirs(dataset_dir)
    if not domains:
        raise DGHeadsError(f"dataset folder {dataset_dir} has no domain folders")
    class_lists = {d: _subdirs(dataset_dir / d) for d in domains}
    classes = _check_same_classes(dataset_dir, class_lists)
    if len(classes) < 2:
        raise DGHeadsError(f"{dataset_dir} has class folders {classes}; classification needs at least 2")
    index = []
    for domain in domains:
        paths, labels = [], []
        for label, cls in enumerate(classes):
            files = _images(dataset_dir / domain / cls)
            paths += [str(f.relative_to(dataset_dir)) for f in files]
            labels += [label] * len(files)
        if not paths:
            raise DGHeadsError(f"domain folder {dataset_dir / domain} holds no images")
        index.append(DomainIndex(domain, paths, labels))
    return classes, index


class ImageListDataset(Dataset):
    """Images by path with labels; an unreadable file raises an error that names it."""

    def __init__(self, root: Path, paths: list[str], labels: list[int],
                 transform: Callable[[Image.Image], object]):
        self.root, self.paths, self.labels, self.transform = root, paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[object, int]:
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:
            raise DGHeadsError(f"cannot read image {path}: {error}") from None
        return self.transform(image), self.labels[i]
