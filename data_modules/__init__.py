"""LightningDataModules and the dataset registry for multi-source domain generalisation."""

from data_modules.domainbed import DomainBedDataModule, default_root
from data_modules.registry import DATASETS, DatasetInfo, get_dataset

__all__ = ["DATASETS", "DatasetInfo", "DomainBedDataModule", "default_root", "get_dataset"]
