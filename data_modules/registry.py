"""What dg-heads knows about each DG dataset: its folder under the data root and its domains.

Like DomainBed's `datasets.py`, one plain table. Class names are read from the folders
(DomainBed's `ImageFolder` order) and turned into prompt-ready names by `prompt_name`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dg_heads.errors import DGHeadsError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    domains: tuple[str, ...]
    num_classes: int
    builtin: bool = False  # made by dg-heads itself on first use (no download)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("rotated_digits", "RotatedDigits", ("0", "15", "30", "45", "60", "75"), 10, builtin=True),
        DatasetInfo("pacs", "PACS", ("art_painting", "cartoon", "photo", "sketch"), 7),
        DatasetInfo("vlcs", "VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), 5),
        DatasetInfo("office_home", "office_home", ("Art", "Clipart", "Product", "Real World"), 65),
        DatasetInfo("terra_incognita", "terra_incognita",
                    ("location_100", "location_38", "location_43", "location_46"), 10),
        DatasetInfo("domain_net", "domain_net",
                    ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345),
    ]
}


def get_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DGHeadsError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def prompt_name(folder_name: str) -> str:
    """`Alarm_Clock` -> `alarm clock`: class folder names read as words in a prompt."""
    return folder_name.replace("_", " ").strip().lower()
