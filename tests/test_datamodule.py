"""The DG DataModule: leave-domains-out, DomainBed splits, per-domain loaders, clear errors."""

import pytest
import torch

from data_modules import DomainBedDataModule
from data_modules.rotated_digits import ANGLES
from dg_heads.errors import DGHeadsError
from tests.conftest import make_domainbed


def test_rotated_digits_domains_and_splits(data_root):
    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, num_workers=0)
    dm.setup("fit")
    assert dm.domain_names == [str(a) for a in sorted(ANGLES, key=str)]
    assert dm.test_domains == ["75"] and "75" not in dm.source_domains and len(dm.source_domains) == 5
    assert len(dm.class_names) == 10 and "seven" in dm.class_names
    for domain in dm.source_domains:
        n_in, n_out = len(dm.train_sets[domain]), len(dm.val_sets[domain])
        assert n_in + n_out == 1797 and n_out == int(1797 * 0.2)
        assert not set(dm.split_manifest[domain]["in"]) & set(dm.split_manifest[domain]["out"])
    assert len(dm.test_sets["75"]) == 1797


def test_splits_are_deterministic_per_trial_seed(data_root):
    def manifest(seed):
        dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), trial_seed=seed, image_size=32)
        dm.setup("fit")
        return dm.split_manifest["0"]["out"]

    assert manifest(0) == manifest(0) and manifest(0) != manifest(1)


def test_train_batch_holds_every_source_domain(data_root):
    dm = DomainBedDataModule("rotated_digits", ["0", "75"], root=str(data_root), image_size=32,
                             batch_size_per_domain=4, num_workers=0)
    dm.setup("fit")
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert list(batch) == ["15", "30", "45", "60"]
    for images, labels in batch.values():
        assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert len(dm.val_dataloader()) == 4 and len(dm.test_dataloader()) == 2


def test_unknown_test_domain_lists_the_domains(data_root):
    dm = DomainBedDataModule("rotated_digits", ["90"], root=str(data_root), image_size=32)
    with pytest.raises(DGHeadsError, match=r"'90'.*not a domain.*\['0', '15'"):
        dm.setup("fit")


def test_missing_root_names_the_folder(tmp_path):
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path / "nowhere"))
    with pytest.raises(DGHeadsError, match=r"nowhere/PACS does not exist.*<domain>/<class>"):
        dm.setup("fit")


def test_class_folders_that_differ_are_named(tmp_path):
    make_domainbed(tmp_path, "PACS", {"photo": ["dog", "horse"], "sketch": ["dog", "hrose"]})
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path))
    with pytest.raises(DGHeadsError, match=r"'sketch'.*missing \['horse'\], extra \['hrose'\]"):
        dm.setup("fit")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DGHeadsError, match=r"unknown dataset 'pacz'.*'pacs'"):
        DomainBedDataModule("pacz", ["x"])


def test_unreadable_image_names_the_file(tmp_path):
    make_domainbed(tmp_path, "PACS", {"photo": ["dog", "cat"], "sketch": ["dog", "cat"]}, per_class=6)
    bad = tmp_path / "PACS" / "sketch" / "dog" / "002.png"
    bad.write_bytes(b"not a png")
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0)
    dm.setup("test")
    with pytest.raises(DGHeadsError, match=r"cannot read image .*sketch/dog/002.png"):
        list(dm.test_dataloader()[0])


def test_single_class_dataset_is_refused(tmp_path):
    make_domainbed(tmp_path, "PACS", {"photo": ["dog"], "sketch": ["dog"]})
    with pytest.raises(DGHeadsError, match="at least 2"):
        DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path)).setup("fit")
