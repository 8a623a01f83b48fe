"""The multi-source DG DataModule: leave-domains-out over a DomainBed folder or a HF dataset.

Sources are every domain not in `test_domains`. Each domain is split into `in` (training) and
`out` (training-domain validation) exactly as DomainBed does. A training step sees
`batch_size_per_domain` images from every source domain, as DomainBed's ERM does and as
domain-alignment losses such as MMD need: ONE training loader over all source domains
(`samplers.SourceStreamSampler`), whose batch is `{domain: (images, labels)}`. Validation has one
loader per source `out` split, test one per held-out domain (the whole domain, or DomainBed's
`in` split of it), so metrics are reported by domain name. Under DDP, evaluation loaders shard
without padding, so no image is counted twice.

Worker processes: a rank runs `num_workers` for training (persistent) and, while it evaluates,
`num_workers` for the one evaluation loader being read (not persistent: they end with their
loader), whatever the number of domains. `num_workers: null` (the default) is the CPUs the job
has, less one for the training process: `SLURM_CPUS_PER_TASK`, else the CPU affinity mask.

Training data, as DomainBed draws it: every source domain is an infinite seeded stream
(`samplers.DomainStreamSampler`), rank-aware under DDP (each process takes every
`world_size`-th batch of the stream; Lightning does not wrap it), so no domain's loader
restarts when that domain runs out. An *epoch* is `steps_per_epoch` steps: the largest source
domain's `in` split // (`batch_size_per_domain` x processes), the same for every domain, so
`max_epochs` keeps its usual meaning for the largest domain (DomainBed itself counts steps; the
benchmark configs use `max_steps`). Epoch `e` is a fixed window of every stream, and the
training loader's state (the stream step it is at) goes into every checkpoint, so a run resumed
from any checkpoint, mid-epoch included, sees exactly the batches (and random augmentations,
seeded by each image's place in the stream) that an uninterrupted run sees.

A dataset that is not in the registry (a DomainBed-layout folder, or a Hugging Face dataset) is
used with no code: its domains and classes are discovered (and checked) when the data is
prepared (`dg_heads.data.own`), and everything above applies to it unchanged.

Images leave the workers as uint8 (`transforms`); the model normalises them on its device
(CLIP mean/std, `DGModule.prepare_images`). Loaders pin memory when the trainer runs on CUDA.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Subset

from dg_heads.data import rotated_digits
from dg_heads.data.errors import DGHeadsError
from dg_heads.data.folder import load_folder_table
from dg_heads.data.hf_source import HFSource, load_hf_table
from dg_heads.data.own import looks_like_path, resolve_dataset, with_layout
from dg_heads.data.registry import DatasetInfo
from dg_heads.data.samplers import (
    CollateDomains,
    SourceDomains,
    SourceStreamSampler,
    StreamLoader,
    steps_per_epoch,
    trainer_position,
)
from dg_heads.data.splits import holdout_split
from dg_heads.data.table import BadImagePolicy, SampleTable, TableDataset, collate_skipping
from dg_heads.data.transforms import AUGMENTATIONS, Augmentation, eval_transform, train_transform
from dg_heads.data.workers import NumWorkers

DATA_ENV = "DG_HEADS_DATA"
TestSplit = Literal["all", "in"]
TEST_SPLITS: tuple[str, ...] = get_args(TestSplit)
log = logging.getLogger("dg_heads.data")


def default_root() -> Path:
    """`$DG_HEADS_DATA`, else `~/.cache/dg_heads/data`."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "dg_heads" / "data")


def load_table(info: DatasetInfo, root: Path, hf: HFSource | None = None) -> SampleTable:
    """The dataset's sample table from a Hugging Face source, or else its DomainBed folder; for a
    dataset not in the registry, with the domains and classes it holds (checked)."""
    if hf is not None:
        return load_hf_table(hf, info)
    if info.own:
        return load_folder_table(Path(info.folder), None, None)
    if info.builtin:
        rotated_digits.build(root / info.folder)
    return load_folder_table(root / info.folder, list(info.domains), list(info.classes))


def split_manifest(table: SampleTable, trial_seed: int, holdout_fraction: float) -> dict[str, dict[str, list[str]]]:
    """Every domain's `in` and `out` sample ids (relative paths for folders), DomainBed's split."""
    out = {}
    for env_index, domain in enumerate(table.domains):
        rows = table.rows_of(domain)
        in_idx, out_idx = holdout_split(len(rows), trial_seed, env_index, holdout_fraction)
        out[domain] = {"in": table.ids_of(rows[in_idx]), "out": table.ids_of(rows[out_idx])}
    return out


class DomainBedDataModule(NumWorkers, L.LightningDataModule):
    """Leave-domains-out DG data: `ROOT/<dataset folder>/<domain>/<class>/<image>` or `hf`.

    Args:
        dataset: a name from `dg_heads.data.registry.DATASETS` (`rotated_digits` is built on first use);
            or a dataset of your own: a DomainBed-layout folder `<domain>/<class>/<image>` named
            under `root` or given by its path, or with `hf` any name for a Hugging Face dataset
            (domains and classes are discovered from the folders or the columns).
        test_domains: held-out domain names (numbers are read as names); every other domain is a source.
        root: data root; null means `$DG_HEADS_DATA` or `~/.cache/dg_heads/data`.
        hf: read the dataset from Hugging Face `datasets` instead of the folder (see `HFSource`).
        trial_seed: DomainBed's trial seed: fixes the in/out split of every domain.
        holdout_fraction: share of each domain kept as its `out` split (source validation).
        test_split: `all` tests on the whole held-out domain (CLIP DG papers), `in` on DomainBed's
            `in` split of it (DomainBed's tables).
        batch_size_per_domain: training images per source domain in every step.
        eval_batch_size: images per evaluation batch.
        num_workers: DataLoader worker processes of the training loader, and of the evaluation
            loader being read (one at a time); null: the job's CPUs less one (`default_num_workers`).
        image_size: model input size (the model checks it matches its own).
        train_augment: `domainbed` (DomainBed's augmentation), `clip` (open_clip's) or `none`.
        bad_images: `skip` an unreadable image (logged by name; evaluation reports how many
            images it scored) or `error` at the first one.
        class_names: prompt names overriding the registry's or the folder names' words (same
            order as the classes: the sorted class folders).
        templates: the class prompts of this data (`["a photo of the digit {}."]`), used by a
            model whose `clip.templates` is null (the shipped method configs); null: the model's
            default, `["a photo of a {}."]`. Prompts belong with the data, so a preset composed
            with another dataset carries none of them.
    """

    def __init__(
        self,
        dataset: str,
        test_domains: list[str | int],
        root: str | None = None,
        hf: HFSource | None = None,
        trial_seed: int = 0,
        holdout_fraction: float = 0.2,
        test_split: TestSplit = "all",
        batch_size_per_domain: int = 32,
        eval_batch_size: int = 128,
        num_workers: int | None = None,
        image_size: int = 224,
        train_augment: Augmentation = "domainbed",
        bad_images: BadImagePolicy = "skip",
        class_names: list[str] | None = None,
        templates: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser() if root else default_root()
        self.templates = list(templates) if templates else None
        self.info = resolve_dataset(dataset, self.root, hf is not None)
        # hparams get the registry's name (DomainBed's `OfficeHome` -> `office_home`),
        # a folder given as a path its full path
        dataset = self.info.folder if self.info.own and looks_like_path(str(dataset)) else self.info.name
        if not 0.0 < holdout_fraction < 1.0:
            raise DGHeadsError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        if batch_size_per_domain < 1:
            raise DGHeadsError(f"data.init_args.batch_size_per_domain must be >= 1, got {batch_size_per_domain}")
        if test_split not in TEST_SPLITS:
            raise DGHeadsError(f"test_split must be one of {TEST_SPLITS}, got {test_split!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise DGHeadsError(f"num_workers must be a whole number >= 0 or null (the job's CPUs less one), "
                               f"got {num_workers!r}")
        if train_augment not in AUGMENTATIONS:
            raise DGHeadsError(f"train_augment must be one of {AUGMENTATIONS}, got {train_augment!r}")
        self.save_hyperparameters()
        self.hf = hf
        self.test_domain_names = [str(d) for d in test_domains]
        self.trial_seed, self.holdout_fraction, self.test_split = trial_seed, holdout_fraction, test_split
        self.batch_size_per_domain, self.eval_batch_size = batch_size_per_domain, eval_batch_size
        self._num_workers = num_workers
        self.image_size, self.train_augment = image_size, train_augment
        self.bad_images = bad_images
        self._class_names_override = class_names
        self._table: SampleTable | None = None
        self._ready = False
        self.oracle_pass = False  # `oracle_test()`: the test loaders are each test domain's `in` and `out` splits

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.info.folder

    def prepare_data(self) -> None:
        """Build RotatedDigits on first use, and read (and so check) the dataset: Lightning starts
        the logger, which writes the run folder, before `setup`, so a bad dataset must fail here
        to leave nothing behind. `setup` reuses the table in this process (other processes read
        it from the folder index)."""
        if self.info.builtin and self.hf is None:
            rotated_digits.build(self.dataset_dir)
        self._load()

    def _check_test_domains(self) -> None:
        names = list(self.info.domains)
        unknown = [d for d in self.test_domain_names if d not in names]
        if unknown or not self.test_domain_names:
            found = f" (found in {self.info.folder or self.hf.describe()})" if self.info.own else ""
            raise DGHeadsError(
                f"test_domains {self.test_domain_names} of {self.info.name}: {unknown or 'none given'} "
                f"not a domain; expected one or more of {names}{found}"
            )
        if len(self.test_domain_names) == len(names):
            raise DGHeadsError(f"test_domains {self.test_domain_names} leave no source domain")

    def _load(self) -> None:
        """The sample table, once; a dataset of one's own gets its domains and classes from it."""
        if self._table is not None:
            return
        if not self.info.own:
            self._check_test_domains()  # before reading a large copy
        table = load_table(self.info, self.root, self.hf)
        if self.info.own:  # its domains and classes are what the folder or the columns hold
            self.info = with_layout(self.info, table.domains, table.classes)
            self._check_test_domains()
        self._table = table

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self._load()
        self.table = self._table
        names = list(self.info.domains)
        for note in self.table.notes:
            log.warning(note)
        self.folder_class_names = list(self.info.classes)
        self.class_names = self._prompt_names()
        self.domain_names = names
        self.source_domains = [d for d in names if d not in self.test_domain_names]
        self.test_domains = [d for d in names if d in self.test_domain_names]
        self._build_splits()
        self._ready = True

    def _prompt_names(self) -> list[str]:
        classes = self.info.classes
        if self._class_names_override is None:
            return [self.info.prompt_name(c) for c in classes]
        if len(self._class_names_override) != len(classes):
            raise DGHeadsError(
                f"class_names has {len(self._class_names_override)} names; the dataset has "
                f"{len(classes)} classes: {list(classes)}"
            )
        return list(self._class_names_override)

    def _build_splits(self) -> None:
        train_tf = train_transform(self.image_size, self.train_augment, uint8=True)
        eval_tf = eval_transform(self.image_size, uint8=True)
        self.train_sets: dict[str, TableDataset] = {}
        self.val_sets: dict[str, TableDataset] = {}
        self.test_sets: dict[str, TableDataset] = {}
        self.oracle_sets: dict[str, TableDataset] = {}  # `<domain>/in`, `<domain>/out` of each test domain
        for env_index, domain in enumerate(self.domain_names):
            rows = self.table.rows_of(domain)
            in_idx, out_idx = holdout_split(len(rows), self.trial_seed, env_index, self.holdout_fraction)
            if domain in self.test_domains:
                test_rows = rows if self.test_split == "all" else rows[in_idx]
                self.test_sets[domain] = TableDataset(self.table, test_rows, eval_tf, self.bad_images)
                for part, idx in (("in", in_idx), ("out", out_idx)):
                    self.oracle_sets[f"{domain}/{part}"] = TableDataset(self.table, rows[idx], eval_tf,
                                                                        self.bad_images)
                continue
            if not in_idx or not out_idx:
                raise DGHeadsError(
                    f"domain {domain!r} has {len(rows)} images: too few to split with "
                    f"holdout_fraction={self.holdout_fraction}"
                )
            self.train_sets[domain] = TableDataset(self.table, rows[in_idx], train_tf, self.bad_images)
            self.val_sets[domain] = TableDataset(self.table, rows[out_idx], eval_tf, self.bad_images)

    @property
    def split_manifest(self) -> dict:
        """What `dg-heads splits` prints, plus this run's test domains and test split (a run's
        `splits.json`, written by the trainer's callbacks: this package writes no run file)."""
        return {
            "dataset": self.info.name, "trial_seed": self.trial_seed, "holdout_fraction": self.holdout_fraction,
            "domains": split_manifest(self.table, self.trial_seed, self.holdout_fraction),
            "test_domains": self.test_domains, "test_split": self.test_split,
        }

    # ------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        """(rank, processes) of the trainer, (0, 1) without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def pin_memory(self) -> bool:
        """Pinned host memory when the trainer runs on CUDA (faster, asynchronous copies), not on CPU."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset, batch_size: int) -> DataLoader:
        """An evaluation loader. Its workers are not persistent: they end when the loader has been
        read, so a rank runs one evaluation loader's workers at a time, however many domains there
        are. Its own generator: reading it draws nothing from the global random state (a resumed
        run's global state must match an uninterrupted run's)."""
        rank, world = self._world()
        sampler = None
        if world > 1:
            # Lightning's default DistributedSampler pads by repeating images: exact numbers need none.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, collate_fn=collate_skipping, generator=torch.Generator(),
        )

    @property
    def steps_per_epoch(self) -> int:
        """Training steps in one epoch: the largest source domain's `in` split // (batch x processes)."""
        return steps_per_epoch([len(s) for s in self.train_sets.values()], self.batch_size_per_domain, self._world()[1])

    def train_dataloader(self) -> StreamLoader:
        """One loader over every source domain, whose batch is `{domain: (images, labels)}`, with
        `batch_size_per_domain` images of each domain's stream in every step; resumable mid-epoch
        (`samplers.StreamLoader`). Augmentations are seeded by the run's seed (`seed_everything`)
        and each image's place in the stream."""
        for name, dataset in self.train_sets.items():
            if len(dataset) < self.batch_size_per_domain:
                raise DGHeadsError(
                    f"source domain {name!r} has {len(dataset)} training images, fewer than "
                    f"batch_size_per_domain={self.batch_size_per_domain}: set data.init_args.batch_size_per_domain "
                    f"to {len(dataset)} or less"
                )
        rank, world = self._world()
        names, sets = list(self.train_sets), list(self.train_sets.values())
        sampler = SourceStreamSampler(
            [len(s) for s in sets], [self.trial_seed * 100 + i for i in range(len(sets))],
            self.batch_size_per_domain, self.steps_per_epoch, rank, world,
            augment_seed=int(os.environ.get("PL_GLOBAL_SEED", 0) or 0))
        return StreamLoader(
            SourceDomains(sets), batch_size=self.batch_size_per_domain * len(sets), sampler=sampler, drop_last=True,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory,
            collate_fn=CollateDomains(names), generator=torch.Generator(), position=self._train_position,
        )

    def _train_position(self) -> tuple[int, int] | None:
        return trainer_position(self.trainer)

    def val_dataloader(self) -> list[DataLoader]:
        return self.source_val_dataloaders()

    def source_val_dataloaders(self, max_images: int | None = None) -> list[DataLoader]:
        """One loader per source domain's `out` split, or the first `max_images` of each: the
        same images whatever the number of processes, shared out over them without padding."""
        sets = [self.val_sets[d] for d in self.source_domains]
        if max_images is not None:
            sets = [s if len(s) <= max_images else Subset(s, range(max_images)) for s in sets]
        return [self._loader(s, self.eval_batch_size) for s in sets]

    def test_dataloader(self) -> list[DataLoader]:
        sets = self.oracle_sets if self.oracle_pass else self.test_sets
        return [self._loader(sets[d], self.eval_batch_size) for d in self.eval_domains("test")]

    @contextmanager
    def oracle_test(self) -> Iterator[None]:
        """Inside it, `test` reads each test domain's DomainBed `in` and `out` splits, named
        `<domain>/in` and `<domain>/out` (`eval_domains("test")`), whatever `test_split` says:
        what DomainBed's test-domain validation (oracle) selects by (`out`) and reports (`in`)."""
        self.oracle_pass = True
        try:
            yield
        finally:
            self.oracle_pass = False

    def predict_dataloader(self) -> list[DataLoader]:
        """The test domains' loaders, each batch also carrying its samples' table rows
        (`(images, labels, rows)`): the predictions file names every image by its id."""
        return [self._loader(self.test_sets[d].rows_view(), self.eval_batch_size) for d in self.test_domains]

    def describe_rows(self, rows: list[int]) -> list[tuple[str, str, str]]:
        """(id, domain, class folder) of table rows."""
        ids = self.table.ids_of(np.asarray(rows, dtype=np.int64))
        return [(i, self.domain_names[self.table.domain_of[r]], self.folder_class_names[self.table.labels[r]])
                for i, r in zip(ids, rows)]

    def eval_domains(self, stage: str) -> list[str]:
        """Domain names of the loaders of `stage`, in loader order (for per-domain metrics)."""
        if stage == "val":
            return self.source_domains
        return [f"{d}/{part}" for d in self.test_domains for part in ("in", "out")] if self.oracle_pass \
            else self.test_domains

    def eval_sizes(self, stage: str) -> dict[str, int]:
        """Images per evaluation domain: what a run must have scored if nothing was skipped."""
        sets = self.val_sets if stage == "val" else self.oracle_sets if self.oracle_pass else self.test_sets
        return {d: len(s) for d, s in sets.items()}
