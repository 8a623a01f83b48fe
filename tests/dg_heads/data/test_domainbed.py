"""The DG DataModule: leave-domains-out, DomainBed splits, per-domain loaders, clear errors, skips."""

import pytest
import torch

from dg_heads.data import DomainBedDataModule
from dg_heads.data.rotated_digits import ANGLES
from dg_heads.errors import DGHeadsError
from tests.conftest import make_benchmark


def test_rotated_digits_domains_and_splits(data_root):
    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, num_workers=0)
    dm.setup("fit")
    assert dm.domain_names == [str(a) for a in sorted(ANGLES, key=str)]
    assert dm.test_domains == ["75"] and "75" not in dm.source_domains and len(dm.source_domains) == 5
    assert len(dm.class_names) == 10 and "seven" in dm.class_names
    manifest = dm.split_manifest["domains"]
    for domain in dm.source_domains:
        n_in, n_out = len(dm.train_sets[domain]), len(dm.val_sets[domain])
        assert n_in + n_out == 1797 and n_out == int(1797 * 0.2)
        assert not set(manifest[domain]["in"]) & set(manifest[domain]["out"])
    assert len(dm.test_sets["75"]) == 1797


def test_test_split_in_is_domainbeds_in_split_of_the_held_out_domain(data_root):
    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, test_split="in")
    dm.setup("test")
    rows = dm.test_sets["75"].rows
    ids = dm.table.ids_of(rows)
    assert len(rows) == 1797 - int(1797 * 0.2) and ids == dm.split_manifest["domains"]["75"]["in"]


def test_splits_are_deterministic_per_trial_seed(data_root):
    def manifest(seed):
        dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), trial_seed=seed, image_size=32)
        dm.setup("fit")
        return dm.split_manifest["domains"]["0"]["out"]

    assert manifest(0) == manifest(0) and manifest(0) != manifest(1)


def test_train_batch_holds_every_source_domain(data_root):
    dm = DomainBedDataModule("rotated_digits", ["0", "75"], root=str(data_root), image_size=32,
                             batch_size_per_domain=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # one loader for every domain
    assert list(batch) == ["15", "30", "45", "60"]
    for images, labels in batch.values():
        assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert len(dm.val_dataloader()) == 4 and len(dm.test_dataloader()) == 2


def test_unknown_test_domain_lists_the_domains(data_root):
    dm = DomainBedDataModule("rotated_digits", ["90"], root=str(data_root), image_size=32)
    with pytest.raises(DGHeadsError, match=r"'90'.*not a domain.*\['0', '15'"):
        dm.setup("fit")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DGHeadsError, match=r"unknown dataset 'pacz'.*'pacs'"):
        DomainBedDataModule("pacz", ["x"])


def _break_images(tmp_path):
    (tmp_path / "PACS/sketch/dog/001.png").write_bytes(b"not a png")
    good = (tmp_path / "PACS/sketch/cat.jpg")
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 10, 10)).save(good, quality=95)
    data = good.read_bytes()
    (tmp_path / "PACS/sketch/horse/000.png").unlink()
    (tmp_path / "PACS/sketch/horse/000.jpg").write_bytes(data[: len(data) // 2])  # truncated
    good.unlink()


def test_unreadable_images_raise_naming_the_file_when_asked(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=2)
    _break_images(tmp_path)
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0, bad_images="error")
    dm.setup("test")
    with pytest.raises(DGHeadsError, match=r"cannot read image .*sketch/dog/001.png"):
        list(dm.test_dataloader()[0])


def test_unreadable_and_truncated_images_are_skipped_and_counted(tmp_path, caplog):
    make_benchmark(tmp_path, "pacs", per_class=2)
    _break_images(tmp_path)
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0, eval_batch_size=4)
    dm.setup("test")
    seen = sum(len(labels) for _, labels in dm.test_dataloader()[0])
    assert len(dm.test_sets["sketch"]) == 14 and seen == 12
    assert "sketch/dog/001.png" in caplog.text and "sketch/horse/000.jpg" in caplog.text


def test_train_epoch_is_the_largest_domain_and_no_domain_restarts(data_root):
    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32,
                             batch_size_per_domain=32, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert dm.steps_per_epoch == 1437 // 32 and len(loader) == 44
    assert not dm.pin_memory  # no trainer on CUDA
