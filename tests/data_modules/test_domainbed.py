"""The DG DataModule: leave-domains-out, DomainBed splits, per-domain loaders, clear errors, skips."""

import pytest
import torch

from data_modules import DomainBedDataModule
from data_modules.rotated_digits import ANGLES
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


def _pacs(tmp_path, **kwargs):
    make_benchmark(tmp_path, "pacs", **kwargs)
    return DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0)


def test_class_folders_that_differ_are_named(tmp_path):
    dm = _pacs(tmp_path, per_class=2)
    (tmp_path / "PACS/sketch/horse").rename(tmp_path / "PACS/sketch/hrose")
    with pytest.raises(DGHeadsError, match=r"PACS/sketch differ.*missing \['horse'\], extra \['hrose'\]"):
        dm.setup("fit")


def test_missing_domain_folder_is_named(tmp_path):
    dm = _pacs(tmp_path, domains=["art_painting", "photo", "sketch"])
    with pytest.raises(DGHeadsError, match=r"lacks the domain folder\(s\) \['cartoon'\]"):
        dm.setup("fit")


def test_empty_class_folder_is_an_incomplete_copy(tmp_path):
    dm = _pacs(tmp_path, per_class=2)
    for f in (tmp_path / "PACS/photo/guitar").iterdir():
        f.unlink()
    with pytest.raises(DGHeadsError, match=r"1 empty class folder\(s\).*\['photo/guitar'\]"):
        dm.setup("fit")


def test_non_image_files_are_skipped_and_counted(tmp_path, caplog):
    dm = _pacs(tmp_path, per_class=2)
    (tmp_path / "PACS/photo/dog/notes.txt").write_text("x")
    (tmp_path / "PACS/sketch/dog/Thumbs.db").write_bytes(b"x")
    dm.setup("fit")
    assert len(dm.table.table) == 4 * 7 * 2
    assert "skipped 2 non-image file(s)" in caplog.text


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


def test_folder_index_is_cached_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    import data_modules.folder as folder

    make_benchmark(tmp_path, "pacs", per_class=2)
    info_args = (tmp_path / "PACS", ["art_painting", "cartoon", "photo", "sketch"],
                 ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"])
    first = folder.load_folder_table(*info_args)
    scans = []
    real_scan = folder.scan_folder
    monkeypatch.setattr(folder, "scan_folder", lambda d: scans.append(d) or real_scan(d))
    again = folder.load_folder_table(*info_args)
    assert scans == [] and again.table.equals(first.table)  # read from the memory-mapped Arrow file
    (tmp_path / "PACS/photo/dog/000.png").rename(tmp_path / "PACS/photo/dog/zzz.png")
    renamed = folder.load_folder_table(*info_args)
    assert len(scans) == 1 and "photo/dog/zzz.png" in renamed.ids.to_pylist()


def _stream(sampler, epochs):
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


def test_train_stream_continues_across_epochs_and_shards_over_ranks():
    from torch.utils.data import DistributedSampler

    from data_modules.samplers import DomainStreamSampler

    n, batch, steps = 10, 4, 3  # 12 samples per epoch of a 10-image domain: the stream wraps mid-epoch
    one = DomainStreamSampler(n, seed=7, batch_size=batch, steps_per_epoch=steps)
    stream = _stream(one, 5)
    assert len(stream) == 5 * steps * batch
    passes = [stream[i:i + n] for i in range(0, len(stream) - n + 1, n)]
    assert all(sorted(p) == list(range(n)) for p in passes)  # every pass a permutation: no restart, no repeat
    assert passes[0] != passes[1]
    assert _stream(DomainStreamSampler(n, 7, batch, steps), 5) == stream  # seeded
    one.set_epoch(3)
    assert list(one) == stream[3 * steps * batch: 4 * steps * batch]  # an epoch is a pure function of (seed, epoch)
    # two ranks: batch g of the one-process stream goes to rank g % 2
    ranks = [DomainStreamSampler(n, 7, batch, steps, rank=r, world_size=2) for r in range(2)]
    assert isinstance(ranks[0], DistributedSampler)  # so Lightning does not wrap (and re-shard) it
    full = _stream(DomainStreamSampler(n, 7, batch, 2 * steps), 2)
    batches = [full[i:i + batch] for i in range(0, len(full), batch)]
    for r, sampler in enumerate(ranks):
        mine = _stream(sampler, 2)
        assert [mine[i:i + batch] for i in range(0, len(mine), batch)] == batches[r::2]


def test_train_epoch_is_the_largest_domain_and_no_domain_restarts(data_root):
    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32,
                             batch_size_per_domain=32, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    iter(loader)
    assert dm.steps_per_epoch == 1437 // 32 and len(loader) == 44
    assert {len(d) for d in loader.iterables.values()} == {44}  # same length: nothing cycles
    assert not dm.pin_memory  # no trainer on CUDA


@pytest.mark.parametrize("augment", ["eval", "domainbed", "clip"])
def test_uint8_images_normalised_on_the_device_equal_the_float_transform(augment, data_root):
    from data_modules.transforms import eval_transform, normalize_uint8, train_transform
    from dg_heads.methods.base import DGModule

    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, num_workers=0)
    dm.setup("fit")
    images = [dm.table.reader.read(int(r)) for r in dm.table.rows_of("0")[:6]]

    def make(uint8):
        return eval_transform(32, uint8=uint8) if augment == "eval" else train_transform(32, augment, uint8=uint8)

    torch.manual_seed(3)
    floats = torch.stack([make(False)(im) for im in images])
    torch.manual_seed(3)
    raw = torch.stack([make(True)(im) for im in images])
    assert raw.dtype == torch.uint8 and raw.shape == floats.shape == (6, 3, 32, 32)
    assert (normalize_uint8(raw) - floats).abs().max() <= 1e-6
    model = DGModule.__new__(DGModule)  # prepare_images needs only the two buffers
    torch.nn.Module.__init__(model)
    model.register_buffer("pixel_mean", torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1))
    model.register_buffer("pixel_std", torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1))
    assert (model.prepare_images(raw) - floats).abs().max() <= 1e-6
    assert model.prepare_images(floats) is floats
    # and the loaders hand out uint8
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert all(x.dtype == torch.uint8 for x, _ in batch.values())
    assert next(iter(dm.val_dataloader()[0]))[0].dtype == torch.uint8
