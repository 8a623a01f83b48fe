"""The image-text retrieval DataModule: train on one caption dataset, evaluate on one or more.

Training batches are `{"images": uint8 [B, 3, H, W], "captions": list[str], "image_index":
LongTensor [B]}`: one caption per image, drawn deterministically from the run's seed, the epoch
and the image's index (among the first `captions_per_image` of its captions), images shuffled by
a seeded `DistributedSampler` (under DDP each process a disjoint share; an epoch is the training
split once).

Validation and test hold one loader per evaluation dataset (`val`, `test`: each a registry name,
a path or hub id, or `{name, dataset, source, split, max_images}`), in the order given, whose batches are
`{"images": uint8 [B, 3, H, W], "image_index": LongTensor [B] (0..N-1 in that split), "captions":
list[list[str]] (every caption of each image, in a fixed order)}`. Under DDP every image goes to
exactly one process, with no padding (`UnrepeatedDistributedSampler`, as the classification
DataModule's evaluation loaders), so recall can be computed exactly once the embeddings are gathered.
`eval_domains(stage)` names the loaders (metrics are logged as `test/<name>/...`) and
`eval_sizes(stage)` gives their images.

Images leave the workers as uint8, resized and centre-cropped as for classification
(`transforms`); the model normalises them on its device.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dg_heads.data.captions import CaptionSource, CaptionSplit, load_split, resolve
from dg_heads.data.errors import DGHeadsError
from dg_heads.data.registry import CAPTION_DATASETS
from dg_heads.data.samplers import ResumableLoader, trainer_position
from dg_heads.data.table import BAD_IMAGE_POLICIES, BadImagePolicy
from dg_heads.data.transforms import AUGMENTATIONS, Augmentation, eval_transform, train_transform
from dg_heads.data.workers import NumWorkers

log = logging.getLogger("dg_heads.data")


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation dataset: how metrics name it, what it is read from, which split, how many images."""

    name: str
    dataset: str  # a registry name, or how the source is named
    source: CaptionSource | None  # None: the registry's (or built-in)
    split: str
    max_images: int | None = None
    key: str = ""  # the config key it came from, for messages


def eval_specs(entries: list[str | dict] | None, default: tuple[str, CaptionSource | None], split: str,
               key: str) -> list[EvalSpec]:
    """The evaluation datasets of `val` or `test` (default: the training dataset's `split`)."""
    given = entries is not None
    if entries is None:
        entries = [{"name": default[0], "source": default[1]}]
    specs = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]" if given else f"data.init_args.dataset ({split} split)"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise DGHeadsError(f"{where}: expected a dataset name or a mapping {{name, source, split, "
                               f"max_images}}, got {entry!r}")
        unknown = sorted(set(entry) - {"name", "source", "split", "max_images", "dataset"})
        if unknown:
            raise DGHeadsError(f"{where}: unknown key(s) {unknown}; expected some of "
                               f"['name', 'dataset', 'source', 'split', 'max_images']")
        if "name" not in entry and "dataset" not in entry:
            raise DGHeadsError(f"{where}: needs a name (a registry name, a path or a hub id)")
        ref = str(entry.get("dataset") or entry["name"])
        name, source, _ = resolve(ref, entry.get("source"), where)
        # how metrics name it: the entry's own name, else the registry name, a path's folder or
        # file name, a hub id's dataset name (`test/<name>/...`: no `/` in it)
        label = str(entry["name"]) if entry.get("dataset") and entry.get("name") else name.split("/")[-1]
        if "/" in label or not label:
            raise DGHeadsError(f"{where}.name: {label!r} names the metrics (<stage>/<name>/...): give a name "
                               f"with no '/'")
        max_images = entry.get("max_images")
        if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
            raise DGHeadsError(f"{where}.max_images: expected a whole number >= 1 or null, got {max_images!r}")
        specs.append(EvalSpec(label, ref if ref in CAPTION_DATASETS else name, source,
                              str(entry.get("split") or split), max_images, where))
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DGHeadsError(f"{key}: dataset name(s) {repeated} appear more than once; give each entry its own "
                           f"name and the dataset it reads, e.g. {{name: mscoco_first1k, dataset: mscoco, "
                           f"max_images: 1000}} (metrics are logged as <stage>/<name>/...)")
    return specs


# ------------------------------------------------------------------ datasets and loaders
def _read(split: CaptionSplit, i: int, bad_images: BadImagePolicy):
    try:
        return split.reader.read(i)
    except (OSError, SyntaxError, ValueError) as error:
        where = split.reader.describe(i)
        if bad_images == "error":
            raise DGHeadsError(f"cannot read image {where} (image {i} of {split.name} {split.split}): {error}; "
                               f"set data.init_args.bad_images: skip to leave it out") from None
        log.warning("skipped unreadable image %s: %s", where, error)
        return None


class EvalCaptions(Dataset):
    """An evaluation split: `(uint8 image, index, all captions)`, None for a skipped image."""

    def __init__(self, split: CaptionSplit, transform, bad_images: BadImagePolicy) -> None:
        self.split, self.transform, self.bad_images = split, transform, bad_images

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = _read(self.split, i, self.bad_images)
        return None if image is None else (self.transform(image), i, list(self.split.captions[i]))


def caption_choice(seed: int, epoch: int, index: int, count: int) -> int:
    """Which of an image's `count` captions a training step sees: fixed by (seed, epoch, index)."""
    return int(np.random.default_rng([seed % 2 ** 32, epoch, index]).integers(count))


class TrainCaptions(Dataset):
    """The training split, indexed by `(index, epoch)` (`EpochSampler`): `(uint8 image, index, one
    caption)`. The caption and the random augmentation are seeded by (seed, epoch, index), so they do
    not depend on which worker reads the image or when."""

    def __init__(self, split: CaptionSplit, transform, bad_images: BadImagePolicy, seed: int,
                 captions_per_image: int | None) -> None:
        self.split, self.transform, self.bad_images = split, transform, bad_images
        self.seed, self.captions_per_image = seed, captions_per_image

    def __len__(self) -> int:
        return len(self.split)

    def caption(self, index: int, epoch: int) -> str:
        captions = self.split.captions[index][:self.captions_per_image]
        return captions[caption_choice(self.seed, epoch, index, len(captions))]

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        image = _read(self.split, index, self.bad_images)
        if image is None:
            return None
        key = int(np.random.default_rng([self.seed % 2 ** 32, epoch, index, 1]).integers(2 ** 63 - 1))
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key)
            random.seed(key)
            pixels = self.transform(image)
        random.setstate(state)
        return pixels, index, self.caption(index, epoch)


class EpochSampler(DistributedSampler):
    """`DistributedSampler`'s seeded shuffle (each process a disjoint share), yielding `(index,
    epoch)`: the dataset draws the caption and augmentation of the epoch it is read in. A
    `DistributedSampler`, so Lightning leaves it as it is under DDP. `skip`: samples of this epoch
    already trained (a run resumed mid-epoch), left out of the next iteration only."""

    skip = 0

    def __iter__(self):
        epoch, skip, self.skip = self.epoch, self.skip, 0
        return ((i, epoch) for i in itertools.islice(super().__iter__(), skip, None))


class CaptionTrainLoader(ResumableLoader):
    """The training loader of caption data, resumable mid-epoch as the DG streams are
    (`samplers.StreamLoader`): at its first `next` the trainer's counters (`position`) say how
    many batches of this epoch were trained, and those batches' images are not read again."""

    def start_at(self, epoch: int, done: int) -> None:
        if epoch == self.sampler.epoch:  # Lightning has set this epoch's shuffle (`set_epoch`)
            self.sampler.skip = done * self.batch_size


def collate_captions(samples: list) -> dict[str, Any]:
    """A batch `{"images", "image_index", "captions"}`, leaving out skipped (unreadable) images."""
    kept = [s for s in samples if s is not None]
    images = torch.stack([s[0] for s in kept]) if kept else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return {"images": images, "image_index": torch.tensor([s[1] for s in kept], dtype=torch.long),
            "captions": [s[2] for s in kept]}


class RetrievalDataModule(NumWorkers, L.LightningDataModule):
    """Image-caption data for image-text retrieval.

    Args:
        dataset: the training dataset (and, unless `val`/`test` say otherwise, the evaluation one):
            a registry name (`digit_captions`, built in; `flickr30k`; `mscoco`), a local path (a
            saved dataset, an `imagefolder` with `metadata.jsonl`, parquet or `.tar` files), or a
            Hugging Face dataset id.
        source: read `dataset` from this `datasets` source instead (`CaptionSource`: columns,
            split column, held-out val, ...).
        train_split: the split trained on.
        val: evaluation datasets for validation, one loader each, in this order: a name as
            `dataset`, or `{name, source, split, max_images}` (split default `val`); null:
            `dataset`'s val split.
        test: the same for testing (split default `test`), e.g. `[flickr30k, mscoco]`.
        cache_dir: the `datasets` cache (null: `HF_DATASETS_CACHE`, else `~/.cache/huggingface/datasets`).
        image_size: model input size (the model checks it matches its own).
        batch_size: training images (one caption each) per step and process.
        eval_batch_size: images per evaluation batch.
        num_workers: DataLoader worker processes; null: the job's CPUs less one (`default_num_workers`).
        seed: seeds the shuffle, the caption drawn per image and epoch, and the augmentation;
            null: the run's seed (`seed_everything`), else 0.
        captions_per_image: training draws from the first this many captions of each image; null: all.
        max_images: use only the first this many images of every split (smoke tests); null: all.
        train_augment: `none` (the evaluation transform), `clip` (open_clip's) or `domainbed`.
        bad_images: `error` at an unreadable image (naming it), or `skip` it (logged; its captions
            are then not queries either).
    """

    task = "retrieval"

    def __init__(
        self,
        dataset: str = "digit_captions",
        source: CaptionSource | None = None,
        train_split: str = "train",
        val: list[str | dict] | None = None,
        test: list[str | dict] | None = None,
        cache_dir: str | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int | None = None,
        seed: int | None = None,
        captions_per_image: int | None = None,
        max_images: int | None = None,
        train_augment: Augmentation = "none",
        bad_images: BadImagePolicy = "error",
    ) -> None:
        super().__init__()
        for key, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                ("image_size", image_size, 1)):
            if not isinstance(value, int) or value < low:
                raise DGHeadsError(f"data.init_args.{key} must be a whole number >= {low}, got {value!r}")
        for key, value in (("num_workers", num_workers), ("captions_per_image", captions_per_image),
                           ("max_images", max_images)):
            low = 0 if key == "num_workers" else 1
            if value is not None and (not isinstance(value, int) or value < low):
                raise DGHeadsError(f"data.init_args.{key} must be a whole number >= {low} or null, got {value!r}")
        if train_augment not in AUGMENTATIONS:
            raise DGHeadsError(f"data.init_args.train_augment must be one of {AUGMENTATIONS}, got {train_augment!r}")
        if bad_images not in BAD_IMAGE_POLICIES:
            raise DGHeadsError(f"data.init_args.bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        self.dataset_name, self.source, self.info = resolve(dataset, source)
        self.val_specs = eval_specs(val, (dataset, source), "val", "data.init_args.val")
        self.test_specs = eval_specs(test, (dataset, source), "test", "data.init_args.test")
        self.save_hyperparameters()
        self.train_split, self.cache_dir = train_split, cache_dir
        self.image_size, self.batch_size, self.eval_batch_size = image_size, batch_size, eval_batch_size
        self._num_workers, self._seed = num_workers, seed
        self.captions_per_image, self.max_images = captions_per_image, max_images
        self.train_augment, self.bad_images = train_augment, bad_images
        self._splits: dict[tuple, CaptionSplit] = {}
        self._ready = False

    # ------------------------------------------------------------ facts
    @property
    def seed(self) -> int:
        if self._seed is not None:
            return self._seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0) or 0)

    def _specs(self, stage: str) -> list[EvalSpec]:
        return self.val_specs if stage in ("val", "validate", "validation") else self.test_specs

    def eval_domains(self, stage: str) -> list[str]:
        """The evaluation datasets' names of `stage` (`val` or `test`), in loader order."""
        return [s.name for s in self._specs(stage)]

    def eval_sizes(self, stage: str) -> dict[str, int]:
        """Images per evaluation dataset of `stage`. A stage the trainer's entry point does not
        run (`val` under `lightning test`) gives only the datasets already read: none is read
        (and so none fails) for it."""
        specs = self._specs(stage)
        used = {None: ("val", "test"), "fit": ("val",), "validate": ("val",), "test": ("test",),
                "predict": ("test",)}.get(self._stage(), ("val", "test"))
        if ("val" if specs is self.val_specs else "test") not in used:
            return {s.name: len(self._splits[self._key(s)]) for s in specs if self._key(s) in self._splits}
        return {s.name: len(self._split_of(s)) for s in specs}

    # ------------------------------------------------------------ loading
    @staticmethod
    def _key(spec: EvalSpec) -> tuple:
        return spec.dataset, repr(spec.source), spec.split, spec.name, spec.max_images

    def _load(self, dataset: str, source: CaptionSource | None, split: str, name: str, max_images: int | None,
              where: str) -> CaptionSplit:
        key = (dataset, repr(source), split, name, max_images)
        if key not in self._splits:
            try:
                loaded = load_split(dataset, source, split, name, self.cache_dir)
            except DGHeadsError as error:
                raise DGHeadsError(error.detail, key=where) from None
            caps = [m for m in (max_images, self.max_images) if m is not None]
            self._splits[key] = loaded.head(min(caps) if caps else None)
        return self._splits[key]

    def _split_of(self, spec: EvalSpec) -> CaptionSplit:
        return self._load(spec.dataset, spec.source, spec.split, spec.name, spec.max_images, spec.key)

    def train_set(self) -> CaptionSplit:
        return self._load(self.dataset_name, self.source, self.train_split, self.dataset_name, None,
                          "data.init_args.dataset (train_split)")

    def prepare_data(self) -> None:
        """Read (and so check) every split the run uses, before Lightning's logger writes the run
        folder: a missing column, an empty split or an unreadable first image fails here. Only the
        splits the trainer's entry point uses (`test` reads no training split)."""
        self._check(self._needed(self._stage()))

    def _stage(self) -> str | None:
        """The trainer's entry point (`fit`, `validate`, `test`, `predict`); None without a trainer."""
        fn = getattr(getattr(getattr(self, "trainer", None), "state", None), "fn", None)
        return getattr(fn, "value", None)

    def _needed(self, stage: str | None = None) -> list[CaptionSplit]:
        splits = []
        if stage in (None, "fit"):
            splits.append(self.train_set())
        if stage in (None, "fit", "validate"):
            splits += [self._split_of(s) for s in self.val_specs]
        if stage in (None, "test", "predict"):
            splits += [self._split_of(s) for s in self.test_specs]
        return splits

    def _check(self, splits: list[CaptionSplit]) -> None:
        for split in splits:
            if self.bad_images == "error":
                _read(split, 0, "error")

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self._needed(stage)
        self._ready = True

    @property
    def split_manifest(self) -> dict:
        """The images of every split this run's entry point uses, by id (`splits.json`)."""
        def one(split: CaptionSplit) -> dict:
            return {"dataset": split.dataset, "split": split.split, "images": len(split), "ids": split.ids}

        stage = self._stage()
        out: dict = {"task": self.task}
        if stage in (None, "fit"):
            out["train"] = one(self.train_set())
        if stage in (None, "fit", "validate"):
            out["val"] = {s.name: one(self._split_of(s)) for s in self.val_specs}
        if stage in (None, "test", "predict"):
            out["test"] = {s.name: one(self._split_of(s)) for s in self.test_specs}
        return out

    # ------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def pin_memory(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _eval_loader(self, spec: EvalSpec) -> DataLoader:
        """One evaluation dataset's loader: every image exactly once over all processes, no padding;
        workers not persistent (one evaluation loader's workers at a time); its own generator."""
        dataset = EvalCaptions(self._split_of(spec), eval_transform(self.image_size, uint8=True), self.bad_images)
        rank, world = self._world()
        sampler = None
        if world > 1:
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=collate_captions, generator=torch.Generator())

    def train_dataloader(self) -> DataLoader:
        split = self.train_set()
        rank, world = self._world()
        if len(split) < self.batch_size * world:
            raise DGHeadsError(
                f"the training split {self.train_split!r} of {self.dataset_name} has {len(split)} images, fewer "
                f"than data.init_args.batch_size={self.batch_size} x {world} process(es): lower batch_size")
        dataset = TrainCaptions(split, train_transform(self.image_size, self.train_augment, uint8=True),
                                self.bad_images, self.seed, self.captions_per_image)
        sampler = EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True)
        return CaptionTrainLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                  num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                  pin_memory=self.pin_memory, collate_fn=collate_captions, generator=torch.Generator(),
                                  position=lambda: trainer_position(self.trainer))

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(s) for s in self.val_specs]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(s) for s in self.test_specs]
