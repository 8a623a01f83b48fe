"""The multi-source DG DataModule: leave-domains-out over a DomainBed folder.

Sources are every domain not in `test_domains`. Each source is split into `in` (training) and
`out` (training-domain validation) exactly as DomainBed does. A training step sees
`batch_size_per_domain` images from every source domain (one loader per domain, combined), as
DomainBed's ERM does and as domain-alignment losses such as MMD need. Validation has one loader
per source `out` split, test one per held-out domain, so metrics are reported by domain name.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from open_clip.transform import image_transform
from torch.utils.data import DataLoader, Dataset, Subset

from data_modules import rotated_digits
from data_modules.folder import ImageListDataset, index_folder
from data_modules.registry import get_dataset, prompt_name
from data_modules.samplers import EpochShuffleSampler
from data_modules.splits import holdout_split
from dg_heads.errors import DGHeadsError

DATA_ENV = "DG_HEADS_DATA"


def default_root() -> Path:
    """`$DG_HEADS_DATA`, else `~/.cache/dg_heads/data`."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "dg_heads" / "data")


class DomainBedDataModule(L.LightningDataModule):
    """Leave-domains-out DG data from `ROOT/<dataset folder>/<domain>/<class>/<image>`.

    Args:
        dataset: a name from `data_modules.registry.DATASETS` (`rotated_digits` is built on first use).
        test_domains: held-out domain names (numbers are read as names); every other domain is a source.
        root: data root; null means `$DG_HEADS_DATA` or `~/.cache/dg_heads/data`.
        trial_seed: DomainBed's trial seed: fixes the in/out split of every domain.
        holdout_fraction: share of each source domain kept for validation.
        batch_size_per_domain: training images per source domain in every step.
        eval_batch_size: images per evaluation batch.
        image_size: model input size (the model checks it matches its own).
        train_augment: open_clip's training augmentation (random resized crop) or none.
        class_names: prompt names overriding the folder names (same order as the folders).
    """

    def __init__(
        self,
        dataset: str,
        test_domains: list[str | int],
        root: str | None = None,
        trial_seed: int = 0,
        holdout_fraction: float = 0.2,
        batch_size_per_domain: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        image_size: int = 224,
        train_augment: bool = True,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.info = get_dataset(dataset)
        if not 0.0 < holdout_fraction < 1.0:
            raise DGHeadsError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        if batch_size_per_domain < 1:
            raise DGHeadsError(f"batch_size_per_domain must be >= 1, got {batch_size_per_domain}")
        self.save_hyperparameters()
        self.root = Path(root).expanduser() if root else default_root()
        self.test_domain_names = [str(d) for d in test_domains]
        self.trial_seed, self.holdout_fraction = trial_seed, holdout_fraction
        self.batch_size_per_domain, self.eval_batch_size = batch_size_per_domain, eval_batch_size
        self.num_workers, self.image_size, self.train_augment = num_workers, image_size, train_augment
        self._class_names_override = class_names
        self._ready = False

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.info.folder

    def prepare_data(self) -> None:
        if self.info.builtin:
            rotated_digits.build(self.dataset_dir)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.info.builtin:  # prepare_data runs on one process per node; make sure it exists here
            rotated_digits.build(self.dataset_dir)
        classes, domains = index_folder(self.dataset_dir)
        names = [d.name for d in domains]
        unknown = [d for d in self.test_domain_names if d not in names]
        if unknown or not self.test_domain_names:
            raise DGHeadsError(
                f"test_domains {self.test_domain_names} of {self.info.name}: {unknown or 'none given'} "
                f"not a domain; expected one or more of {names}"
            )
        if len(self.test_domain_names) == len(names):
            raise DGHeadsError(f"test_domains {self.test_domain_names} leave no source domain")
        self.folder_class_names = classes
        self.class_names = self._prompt_names(classes)
        self.domain_names = names
        self.source_domains = [d for d in names if d not in self.test_domain_names]
        self.test_domains = [d for d in names if d in self.test_domain_names]
        self._build_splits(domains)
        self._ready = True

    def _prompt_names(self, classes: list[str]) -> list[str]:
        if self._class_names_override is None:
            return [prompt_name(c) for c in classes]
        if len(self._class_names_override) != len(classes):
            raise DGHeadsError(
                f"class_names has {len(self._class_names_override)} names; the dataset has "
                f"{len(classes)} classes: {classes}"
            )
        return list(self._class_names_override)

    def _build_splits(self, domains: list) -> None:
        train_tf = image_transform(self.image_size, is_train=self.train_augment)
        eval_tf = image_transform(self.image_size, is_train=False)
        self.train_sets: dict[str, Dataset] = {}
        self.val_sets: dict[str, Dataset] = {}
        self.test_sets: dict[str, Dataset] = {}
        self.split_manifest: dict[str, dict[str, list[str]]] = {}
        for env_index, domain in enumerate(domains):
            if domain.name in self.test_domains:
                self.test_sets[domain.name] = ImageListDataset(self.dataset_dir, domain.paths, domain.labels, eval_tf)
                self.split_manifest[domain.name] = {"test": domain.paths}
                continue
            in_idx, out_idx = holdout_split(len(domain.paths), self.trial_seed, env_index, self.holdout_fraction)
            if not in_idx or not out_idx:
                raise DGHeadsError(
                    f"domain {domain.name!r} has {len(domain.paths)} images: too few to split with "
                    f"holdout_fraction={self.holdout_fraction}"
                )
            train = ImageListDataset(self.dataset_dir, domain.paths, domain.labels, train_tf)
            val = ImageListDataset(self.dataset_dir, domain.paths, domain.labels, eval_tf)
            self.train_sets[domain.name] = Subset(train, in_idx)
            self.val_sets[domain.name] = Subset(val, out_idx)
            self.split_manifest[domain.name] = {
                "in": [domain.paths[i] for i in in_idx],
                "out": [domain.paths[i] for i in out_idx],
            }

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        sampler = EpochShuffleSampler(len(dataset), seed) if shuffle else None
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=shuffle,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> CombinedLoader:
        """A dict batch `{domain: (images, labels)}` with every source domain in every step."""
        for name, dataset in self.train_sets.items():
            if len(dataset) < self.batch_size_per_domain:
                raise DGHeadsError(
                    f"source domain {name!r} has {len(dataset)} training images, fewer than "
                    f"batch_size_per_domain={self.batch_size_per_domain}"
                )
        loaders = {
            d: self._loader(s, self.batch_size_per_domain, True, seed=self.trial_seed * 100 + i)
            for i, (d, s) in enumerate(self.train_sets.items())
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.val_sets[d], self.eval_batch_size, False) for d in self.source_domains]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.test_sets[d], self.eval_batch_size, False) for d in self.test_domains]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def eval_domains(self, stage: str) -> list[str]:
        """Domain names of the loaders of `stage`, in loader order (for per-domain metrics)."""
        return self.source_domains if stage == "val" else self.test_domains
