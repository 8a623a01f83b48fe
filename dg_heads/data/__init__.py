"""LightningDataModules and the dataset registry for multi-source domain generalisation.

The registry is plain Python; the DataModule (Lightning, torch) is imported on first use, so
tools that only need dataset facts (`dg-heads sweep`) start fast."""

from dg_heads.data.registry import CAPTION_DATASETS, DATASETS, CaptionDatasetInfo, DatasetInfo, get_dataset

__all__ = ["CAPTION_DATASETS", "DATASETS", "CaptionDatasetInfo", "DatasetInfo", "DomainBedDataModule",
           "RetrievalDataModule", "default_root", "get_dataset"]


def __getattr__(name: str):
    if name in ("DomainBedDataModule", "default_root"):
        from dg_heads.data import domainbed

        return getattr(domainbed, name)
    if name == "RetrievalDataModule":
        from dg_heads.data import retrieval

        return retrieval.RetrievalDataModule
    raise AttributeError(f"module 'dg_heads.data' has no attribute {name!r}")
