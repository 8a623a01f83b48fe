"""What dg-heads knows about each DG dataset, as DomainBed's `datasets.py` does: one plain table.

For every benchmark: its DomainBed folder under the data root, its domains (DomainBed's env
order: sorted folder names), its class folders (label order: sorted, as torchvision's
`ImageFolder`), prompt-ready class names, and the image count per domain (and per class where
tabulated: PACS, VLCS), so that `dg-heads prepare` can check a copy. Where the counts come from
is stated beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dg_heads.data.dataset_classes import DOMAIN_NET_CLASSES, OFFICE_HOME_CLASSES
from dg_heads.data.errors import DGHeadsError


@dataclass(frozen=True)
class Archive:
    """A download that unpacks into the dataset folder; `sha256` None means no published checksum."""

    url: str
    sha256: str | None = None
    strip: str = ""  # a leading folder inside the archive to drop
    provides: str = ""  # the top-level folder it unpacks to: present means done (unpacked atomically)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)  # images per domain in a complete copy
    counts_source: str = ""
    # images per domain and class, where tabulated (a swapped or misfiled image keeps the domain total)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    prompt_names: dict[str, str] = field(default_factory=dict)  # class folder -> words, where not obvious
    archives: tuple[Archive, ...] = ()
    manual_steps: str = ""
    builtin: bool = False  # made by dg-heads itself on first use (no download)
    # not in this table: `folder` is its path, domains and classes are discovered (`dg_heads.data.own`)
    own: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prompt_name(self, folder_name: str) -> str:
        return self.prompt_names.get(folder_name) or prompt_name(folder_name)


def prompt_name(folder_name: str) -> str:
    """`Alarm_Clock` -> `alarm clock`: class folder names read as words in a prompt."""
    return folder_name.replace("_", " ").replace("-", " ").strip().lower()


def _per_class(classes: tuple[str, ...], **domains: tuple[int, ...]) -> dict[str, dict[str, int]]:
    """Per-class counts written as one row per domain, in the order of `classes`."""
    return {domain: dict(zip(classes, row, strict=True)) for domain, row in domains.items()}


_DOMAINBED_MANUAL = (
    "DomainBed's downloader fetches it from Google Drive, which has no stable address or "
    "checksum: run `python -m domainbed.scripts.download --data_dir ROOT` from DomainBed "
    "(https://github.com/facebookresearch/DomainBed), or unpack your copy so that "
    "ROOT/{folder}/<domain>/<class>/<image> holds the domains {domains}."
)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "rotated_digits", "RotatedDigits", ("0", "15", "30", "45", "60", "75"),
            tuple(sorted(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))),
            counts={d: 1797 for d in ("0", "15", "30", "45", "60", "75")},
            counts_source="scikit-learn's bundled digits (1,797 images), one copy per rotation",
            builtin=True,
        ),
        DatasetInfo(
            "pacs", "PACS", ("art_painting", "cartoon", "photo", "sketch"),
            ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
            counts={"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
            counts_source="Li et al. 2017 (PACS), 9,991 images; per-class counts as tabulated for the "
                          "PACS release (they add up to the per-domain ones); not checked against a copy here",
            class_counts=_per_class(
                ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
                art_painting=(379, 255, 285, 184, 201, 295, 449), cartoon=(389, 457, 346, 135, 324, 288, 405),
                photo=(189, 202, 182, 186, 199, 280, 432), sketch=(772, 740, 753, 608, 816, 80, 160)),
        ),
        DatasetInfo(
            "vlcs", "VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
            ("bird", "car", "chair", "dog", "person"),
            counts={"Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
            counts_source="DomainBed's VLCS copy, 10,729 images, per class as tabulated for it (they add up "
                          "to the per-domain ones); not checked against a copy here",
            class_counts=_per_class(
                ("bird", "car", "chair", "dog", "person"),
                Caltech101=(237, 123, 118, 67, 870), LabelMe=(80, 1209, 89, 43, 1235),
                SUN09=(21, 933, 1036, 31, 1261), VOC2007=(330, 699, 428, 420, 1499)),
        ),
        DatasetInfo(
            "office_home", "office_home", ("Art", "Clipart", "Product", "Real World"), OFFICE_HOME_CLASSES,
            counts={"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
            counts_source="Venkateswara et al. 2017 (OfficeHome), 15,588 images",
            prompt_names={"Postit_Notes": "post-it notes", "TV": "TV", "ToothBrush": "toothbrush",
                          "Flipflops": "flip flops"},
        ),
        DatasetInfo(
            "terra_incognita", "terra_incognita",
            ("location_100", "location_38", "location_43", "location_46"),
            ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
            counts={"location_100": 4741, "location_38": 9736, "location_43": 3970, "location_46": 5883},
            counts_source="DomainBed's TerraIncognita subset (4 camera locations, 10 classes) as "
                          "reported by DomainBed follow-ups; not checked against a copy here",
            prompt_names={"empty": "empty scene"},  # camera-trap frames with no animal
            manual_steps=(
                "DomainBed builds it from the Caltech Camera Traps release on LILA "
                "(eccv_18_all_images_sm.tar.gz and caltech_camera_traps.json.zip, ~6 GB), keeping "
                "locations 38, 43, 46, 100 and 10 classes: run `python -m domainbed.scripts.download "
                "--data_dir ROOT` from DomainBed, or place the result at ROOT/terra_incognita/."
            ),
        ),
        DatasetInfo(
            "domain_net", "domain_net",
            ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), DOMAIN_NET_CLASSES,
            counts={"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
                    "real": 172947, "sketch": 69128},
            counts_source="the official DomainNet release (586,575 images); DomainBed's downloader "
                          "also deletes the files in its domain_net_duplicates.txt, so a DomainBed "
                          "copy holds slightly fewer",
            prompt_names={"The_Eiffel_Tower": "Eiffel Tower", "The_Great_Wall_of_China": "Great Wall of China",
                          "The_Mona_Lisa": "Mona Lisa", "t-shirt": "t-shirt"},
            archives=tuple(
                Archive(f"http://csr.bu.edu/ftp/visda/2019/multi-source/{path}.zip", provides=path.split("/")[-1])
                for path in ("groundtruth/clipart", "infograph", "groundtruth/painting",
                             "quickdraw", "real", "sketch")
            ),
        ),
    ]
}


def _plain(name: str) -> str:
    """`OfficeHome`, `office_home`, `Office-Home`, `OFFICEHOME` -> `officehome`."""
    return "".join(c for c in str(name).lower() if c.isalnum())


# DomainBed's class names (`PACS`, `VLCS`, `OfficeHome`, `TerraIncognita`, `DomainNet`), the
# registry's names and the folder names, in any case, with or without `_`, `-` or spaces
_ALIASES = {alias: info.name for info in DATASETS.values() for alias in (_plain(info.name), _plain(info.folder))}


def known_names() -> str:
    """The registry's names, for messages about a name it does not hold."""
    return (f"{sorted(DATASETS)} (or DomainBed's PACS, VLCS, OfficeHome, TerraIncognita, DomainNet, "
            f"in any case); image-caption data for retrieval (RetrievalDataModule): {sorted(CAPTION_DATASETS)}")


def dataset_name(name: str) -> str:
    """The registry's name of a dataset named as DomainBed (`OfficeHome`), as dg-heads
    (`office_home`) or as its folder, in any case."""
    if name in DATASETS:
        return name
    found = _ALIASES.get(_plain(name))
    if found is None:
        raise DGHeadsError(f"unknown dataset {name!r}; expected one of {known_names()}")
    return found


def get_dataset(name: str) -> DatasetInfo:
    return DATASETS[dataset_name(name)]


# ------------------------------------------------------------------ image-caption (retrieval) data
@dataclass(frozen=True)
class CaptionDatasetInfo:
    """An image-caption dataset for retrieval (`dg_heads.data.RetrievalDataModule`).

    `source`: the fields of `dg_heads.data.captions.CaptionSource` it is read from by default (a
    plain mapping: this module imports nothing heavy); None for a built-in one. `images`: images
    per split in a complete copy, where known."""

    name: str
    source: dict | None
    images: dict[str, int] = field(default_factory=dict)
    captions_per_image: int = 5
    counts_source: str = ""
    builtin: bool = False
    about: str = ""


CAPTION_DATASETS: dict[str, CaptionDatasetInfo] = {
    info.name: info
    for info in [
        CaptionDatasetInfo(
            "digit_captions", None, images={"train": 500, "val": 100, "test": 100}, builtin=True,
            counts_source="scikit-learn's bundled digits, rotated; fixed splits (dg_heads.data.digit_captions)",
            about="built in (no download): rotated handwritten digits, five captions naming digit and rotation",
        ),
        CaptionDatasetInfo(
            "flickr30k", {"name": "clip-benchmark/wds_flickr30k", "holdout_val": 1014},
            images={"train": 27986, "val": 1014, "test": 1000},
            counts_source="CLIP_benchmark's webdataset copy: Karpathy's train (29,000) and test (1,000 images, "
                          "5,000 captions: the Flickr30k 1K test); it has no val split, so 1,014 training "
                          "images (Karpathy's val size) are held out as val",
            about="Flickr30k, Karpathy splits; test = the 1K test (1,000 images, 5 captions each)",
        ),
        CaptionDatasetInfo(
            "mscoco", {"name": "clip-benchmark/wds_mscoco_captions", "holdout_val": 5000},
            images={"val": 5000, "test": 5000},
            counts_source="CLIP_benchmark's webdataset copy: Karpathy's 5K test (5,000 images, ~25,000 "
                          "captions) and a train split of ~30.6k images (not Karpathy's 113k); it has no "
                          "val split, so 5,000 training images are held out as val",
            about="MS-COCO captions; test = Karpathy's 5K test (5,000 images, ~5 captions each)",
        ),
    ]
}


def caption_dataset_names() -> list[str]:
    return sorted(CAPTION_DATASETS)


def manual_steps(info: DatasetInfo) -> str:
    """How to get a dataset that has no stable download."""
    if info.manual_steps:
        return info.manual_steps
    return _DOMAINBED_MANUAL.format(folder=info.folder, domains=list(info.domains))
