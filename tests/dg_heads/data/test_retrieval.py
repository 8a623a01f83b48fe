"""Retrieval data: the built-in digit captions, the RetrievalDataModule's batches (training: one
seeded caption per image; evaluation: every image once over all processes, with all its captions),
and image-caption data through `datasets` (parquet with a split column, webdataset `jpg` + `txt`,
`save_to_disk`, an imagefolder with `metadata.jsonl`), each built here and read offline."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dg_heads.data import RetrievalDataModule
from dg_heads.data.rotated_digits import CLASS_NAMES
from tests.conftest import REPO, run_main


def _png(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _captions(i: int) -> list[str]:
    return [f"picture {i} first caption", f"picture {i} second caption", f"picture {i} third caption"]


def make_caption_parquet(path: Path, splits: list[str], caption_column: str = "caption") -> Path:
    """A Karpathy-style parquet file: image bytes, a list of captions, a split column, file names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"image": {"bytes": _png(i), "path": None}, caption_column: _captions(i), "split": split,
             "filename": f"{i:03d}.jpg"} for i, split in enumerate(splits)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_caption_webdataset(folder: Path, splits: dict[str, int]) -> Path:
    """CLIP_benchmark's layout: `<split>/0.tar` of `<key>.jpg` + `<key>.txt` (one caption a line)."""
    i = 0
    for split, count in splits.items():
        (folder / split).mkdir(parents=True)
        with tarfile.open(folder / split / "0.tar", "w") as tar:
            for _ in range(count):
                for ext, data in (("jpg", _png(i)), ("txt", "\n".join(_captions(i)).encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                i += 1
    return folder


def make_caption_imagefolder(folder: Path, count: int, as_list: bool) -> Path:
    (folder / "test").mkdir(parents=True)
    with open(folder / "test" / "metadata.jsonl", "w") as f:
        for i in range(count):
            (folder / "test" / f"{i:03d}.png").write_bytes(_png(i))
            caption = _captions(i) if as_list else _captions(i)[0]
            f.write(json.dumps({"file_name": f"{i:03d}.png", "caption": caption}) + "\n")
    return folder


def make_caption_saved(folder: Path, count: int) -> Path:
    import datasets

    data = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(i), "path": None} for i in range(count)],
         "sentences": [_captions(i) for i in range(count)]},
        features=datasets.Features({"image": datasets.Image(), "sentences": [datasets.Value("string")]}))
    datasets.DatasetDict({"test": data}).save_to_disk(str(folder))
    return folder


def make_caption_copy(folder: Path, sizes: dict[str, int] | None = None) -> Path:
    """A small fake copy of a registry caption dataset (`flickr30k`, `mscoco`): a `save_to_disk`
    folder with train, val and test splits in CLIP_benchmark's columns (`jpg`, `txt`: one caption a
    line). A run reads it instead of the hub copy with `--data.init_args.source '{path: FOLDER}'`."""
    import datasets

    parts, start = {}, 0
    for split, count in (sizes or {"train": 24, "val": 8, "test": 8}).items():
        numbers = range(start, start + count)
        parts[split] = datasets.Dataset.from_dict(
            {"jpg": [{"bytes": _png(i), "path": None} for i in numbers],
             "txt": ["\n".join(_captions(i)) for i in numbers]},
            features=datasets.Features({"jpg": datasets.Image(), "txt": datasets.Value("string")}))
        start += count
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def _trainer(rank: int, world: int) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, num_devices=world,
                           strategy=SimpleNamespace(root_device=torch.device("cpu")))


def _module(**kwargs) -> RetrievalDataModule:
    return RetrievalDataModule(**{"image_size": 16, "num_workers": 0, "batch_size": 8, "eval_batch_size": 16,
                                  **kwargs})


def _eval_batches(dm: RetrievalDataModule, stage: str, rank: int = 0, world: int = 1) -> list[list[dict]]:
    dm.trainer = _trainer(rank, world)
    loaders = dm.val_dataloader() if stage == "val" else dm.test_dataloader()
    return [list(loader) for loader in loaders]


# ------------------------------------------------------------------ the built-in digit captions
def test_digit_captions_fixed_disjoint_splits_whose_captions_name_digit_and_rotation():
    from sklearn.datasets import load_digits

    target = load_digits().target
    dm = _module()
    assert RetrievalDataModule.task == "retrieval" and dm.image_size == 16
    assert dm.eval_sizes("val") == {"digit_captions": 100} and dm.eval_sizes("test") == {"digit_captions": 100}
    manifest = dm.split_manifest
    ids = {"train": manifest["train"]["ids"], "val": manifest["val"]["digit_captions"]["ids"],
           "test": manifest["test"]["digit_captions"]["ids"]}
    assert {k: len(v) for k, v in ids.items()} == {"train": 500, "val": 100, "test": 100}
    digits = {k: {i.split("_")[0] for i in v} for k, v in ids.items()}  # id: <sklearn row>_<angle>
    assert not digits["train"] & digits["val"] and not digits["train"] & digits["test"] \
        and not digits["val"] & digits["test"]
    assert ids == {k: v["ids"] if k == "train" else v["digit_captions"]["ids"]
                   for k, v in _module().split_manifest.items() if k != "task"}  # the same every time
    batches = _eval_batches(dm, "test")[0]
    captions = [c for b in batches for c in b["captions"]]
    assert len(captions) == 100 and all(len(c) == 5 for c in captions)
    angles = set()
    for image_id, image_captions in zip(ids["test"], captions):
        row, angle = (int(x) for x in image_id.split("_"))
        angles.add(angle)
        word = CLASS_NAMES[target[row]]
        assert word in image_captions[0] and f"{angle} degrees" in image_captions[0]
        assert f"digit {target[row]}," in image_captions[1]
    assert len(angles) > 3  # several rotations


# ------------------------------------------------------------------ training batches
def test_training_batches_one_seeded_caption_per_image_disjoint_shares_under_ddp():
    dm = _module(seed=3, max_images=64)
    split = dm.train_set()
    dm.trainer = _trainer(0, 1)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (8, 3, 16, 16)
    assert batch["image_index"].dtype == torch.long and len(batch["captions"]) == 8
    for index, caption in zip(batch["image_index"].tolist(), batch["captions"]):
        assert caption in split.captions[index]
    epoch0 = [(b["image_index"].tolist(), b["captions"]) for b in loader]
    assert sorted(i for ids, _ in epoch0 for i in ids) == list(range(64))  # every image once an epoch
    again = _module(seed=3, max_images=64)
    again.trainer = _trainer(0, 1)
    assert [(b["image_index"].tolist(), b["captions"]) for b in again.train_dataloader()] == epoch0
    loader.sampler.set_epoch(1)  # what Lightning does at each epoch
    epoch1 = [(b["image_index"].tolist(), b["captions"]) for b in loader]
    assert [i for ids, _ in epoch1 for i in ids] != [i for ids, _ in epoch0 for i in ids]
    by_image0 = {i: c for ids, caps in epoch0 for i, c in zip(ids, caps)}
    by_image1 = {i: c for ids, caps in epoch1 for i, c in zip(ids, caps)}
    assert sum(by_image0[i] != by_image1[i] for i in by_image0) > 16  # another caption for many images
    first_only = _module(seed=3, max_images=64, captions_per_image=1)
    first_only.trainer = _trainer(0, 1)
    for b in first_only.train_dataloader():
        assert all(c == split.captions[i][0] for i, c in zip(b["image_index"].tolist(), b["captions"]))
    shares = []
    for rank in (0, 1):
        ddp = _module(seed=3, max_images=64)
        ddp.trainer = _trainer(rank, 2)
        shares.append([i for b in ddp.train_dataloader() for i in b["image_index"].tolist()])
    assert len(shares[0]) == len(shares[1]) == 32 and not set(shares[0]) & set(shares[1])


def test_a_run_resumed_mid_epoch_trains_on_the_rest_of_that_epochs_shuffle():
    """Resumed at batch 3 of epoch 1 (the trainer's counters, restored from the checkpoint): the
    loader hands out batches 3, 4, ... of that epoch, as the uninterrupted run did (images and their
    captions), not the epoch from its start; with a loader worker too."""
    def batches(ready: int | None, workers: int = 0) -> list:
        dm = _module(seed=3, max_images=64, num_workers=workers)
        dm.trainer = _trainer(0, 1)
        if ready is not None:  # what Lightning's fit loop holds after restoring a mid-epoch checkpoint
            dm.trainer.current_epoch = 1
            dm.trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(
                batch_progress=SimpleNamespace(current=SimpleNamespace(ready=ready))))
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)  # Lightning, at the epoch's start
        return [(b["image_index"].tolist(), b["captions"]) for b in loader]

    whole = batches(None)
    assert len(whole) == 8
    assert batches(3) == whole[3:]
    assert batches(3, workers=1) == whole[3:]
    assert batches(0) == whole


# ------------------------------------------------------------------ evaluation loaders
def test_eval_loaders_one_per_dataset_every_image_once_over_processes_with_all_captions():
    dm = _module(val=["digit_captions"], eval_batch_size=16,
                 test=[{"name": "digits_first30", "dataset": "digit_captions", "max_images": 30},
                       {"name": "digits_val", "dataset": "digit_captions", "split": "val"}])
    assert dm.eval_domains("val") == ["digit_captions"]
    assert dm.eval_domains("test") == ["digits_first30", "digits_val"]
    assert dm.eval_sizes("test") == {"digits_first30": 30, "digits_val": 100}
    one = _eval_batches(dm, "test")
    two = [_eval_batches(dm, "test", rank, 2) for rank in (0, 1)]
    for loader, size in enumerate((30, 100)):
        seen = [i for rank in two for b in rank[loader] for i in b["image_index"].tolist()]
        assert sorted(seen) == list(range(size))  # each image on exactly one process, no padding
        single = {i: (img, caps) for b in one[loader]
                  for i, img, caps in zip(b["image_index"].tolist(), b["images"], b["captions"])}
        assert sorted(single) == list(range(size))
        for rank in two:
            for b in rank[loader]:
                assert b["images"].dtype == torch.uint8 and b["images"].shape[1:] == (3, 16, 16)
                for i, img, caps in zip(b["image_index"].tolist(), b["images"], b["captions"]):
                    assert torch.equal(img, single[i][0]) and caps == single[i][1] and len(caps) == 5
    val_ids = dm.split_manifest["val"]["digit_captions"]["ids"]
    assert dm.split_manifest["test"]["digits_val"]["ids"] == val_ids  # the entry's split


# ------------------------------------------------------------------ sources through `datasets`
def _read_back(tmp_path: Path, kind: str) -> tuple[RetrievalDataModule, list[dict]]:
    if kind == "parquet":
        ref = str(make_caption_parquet(tmp_path / "karpathy.parquet", ["train", "test", "val", "test", "restval"]))
    elif kind == "webdataset":
        ref = str(make_caption_webdataset(tmp_path / "wds", {"train": 3, "test": 2}))
    elif kind == "saved":
        ref = str(make_caption_saved(tmp_path / "saved", 2))
    else:
        ref = str(make_caption_imagefolder(tmp_path / kind, 2, as_list=kind == "imagefolder_list"))
    dm = _module(dataset=ref, val=[], test=[ref])
    return dm, _eval_batches(dm, "test")[0]


@pytest.mark.parametrize("kind", ["parquet", "webdataset", "saved", "imagefolder_list", "imagefolder_string"])
def test_caption_sources_read_offline(tmp_path, kind):
    dm, batches = _read_back(tmp_path, kind)
    captions = [c for b in batches for c in b["captions"]]
    images = torch.cat([b["images"] for b in batches])
    # the test rows' picture numbers: parquet rows 1 and 3 (split column), webdataset 3 and 4
    # (the test shard comes after the 3 training pictures), the others 0 and 1
    numbers = {"parquet": [1, 3], "webdataset": [3, 4]}.get(kind, [0, 1])
    expected = [_captions(n)[:1] if kind == "imagefolder_string" else _captions(n) for n in numbers]
    assert captions == expected
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    for n, image in zip(numbers, images):  # the right picture: its pixels, resized as evaluation does
        from dg_heads.data.transforms import eval_transform

        original = eval_transform(16, uint8=True)(Image.open(io.BytesIO(_png(n))).convert("RGB"))
        assert torch.equal(image, original)


def test_karpathy_split_column_and_held_out_val(tmp_path):
    from dg_heads.data.captions import CaptionSource

    # one HF split holding every row, the Karpathy split in a column (nlphuji/flickr30k's layout)
    ref = make_caption_parquet(tmp_path / "k.parquet", ["train", "val", "test", "restval", "train", "test"])
    dm = _module(dataset=str(ref), batch_size=2)
    assert [len(dm.train_set()), *dm.eval_sizes("val").values(), *dm.eval_sizes("test").values()] == [3, 1, 2]
    assert dm.split_manifest["train"]["ids"] == ["000.jpg", "003.jpg", "004.jpg"]  # train and restval
    # a copy with no val split (CLIP_benchmark's): a fixed share of train held out as val
    folder = make_caption_webdataset(tmp_path / "wds", {"train": 10, "test": 2})
    held = _module(dataset="wds", source=CaptionSource(name=str(folder), holdout_val=4), batch_size=2)
    train, val = held.split_manifest["train"]["ids"], held.split_manifest["val"]["wds"]["ids"]
    assert len(train) == 6 and len(val) == 4 and sorted(train + val) == [f"{i:05d}" for i in range(10)]
    again = _module(dataset="wds", source={"name": str(folder), "holdout_val": 4}, batch_size=2)
    assert again.split_manifest["val"]["wds"]["ids"] == val  # the same images every time
    assert held.split_manifest["test"]["wds"]["ids"] == ["00010", "00011"]


# ------------------------------------------------------------------ bad input: one error line, exit 2
def _prepare(tmp_path: Path, *args: str):
    return run_main("prepare", *args, cwd=tmp_path)


def test_prepare_reports_a_caption_dataset(tmp_path):
    folder = make_caption_webdataset(tmp_path / "wds", {"train": 5, "test": 2})
    result = _prepare(tmp_path, "mine", "--source", f"{{name: {folder}, holdout_val: 1}}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"mine: reading {folder} through Hugging Face datasets") and "offline" in lines[0]
    assert lines[1] == f"mine at {folder}: usable"
    assert lines[2:5] == ["  train: 4 images, 12 captions (3 per image)", "  val: 1 images, 3 captions (3 per image)",
                          "  test: 2 images, 6 captions (3 per image)"]


def test_prepare_of_ones_own_caption_data_with_a_test_split_alone(tmp_path):
    """A test split alone (for `lightning test`): the default train and val are noted as absent, not an
    error; a registry copy lacking one would be a problem; none of the three is one error line."""
    folder = make_caption_imagefolder(tmp_path / "if", 2, as_list=True)
    result = _prepare(tmp_path, "mine", "--source", f"{{name: {folder}}}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:] == [f"mine at {folder}: usable", "  test: 2 images, 6 captions (3 per image)",
                         "  note: train: none (its splits are ['test'] and it has no split column)",
                         "  note: val: none (its splits are ['test'] and it has no split column)"], result.stdout
    parquet = make_caption_parquet(tmp_path / "d.parquet", ["extra"], caption_column="words")  # no Karpathy split
    result = _prepare(tmp_path, "mine", "--source", f"{{data_files: [{parquet}], caption_column: words}}")
    assert result.returncode == 2 and "has none of the splits ['train', 'val', 'test']" in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["no_caption_column", "empty_split", "unreadable_image", "unknown_name",
                                  "registry_offline", "missing_folder"])
def test_bad_caption_data_is_one_error_line(tmp_path, case):
    parquet = make_caption_parquet(tmp_path / "d.parquet", ["train", "test"], caption_column="words")
    if case == "no_caption_column":
        args, expected = ["mine", "--source", f"{{data_files: [{parquet}]}}", "--split", "test"], \
            ["has no caption column", "'words'", "caption_column"]
    elif case == "empty_split":
        args, expected = ["mine", "--source", f"{{data_files: [{parquet}], caption_column: words}}",
                          "--split", "val"], ["split 'val'", "is empty", "['test', 'train']"]
    elif case == "unreadable_image":
        folder = make_caption_imagefolder(tmp_path / "if", 2, as_list=True)
        (folder / "test" / "000.png").write_bytes(b"not a png")
        args, expected = ["mine", "--source", f"{{name: {folder}}}", "--split", "test"], \
            ["test split of mine", "cannot be read", str(folder)]
    elif case == "missing_folder":  # a path, not a hub id: said so, not the hub's "repo id" complaint
        args, expected = ["mine", "--source", "{name: ./no_such_folder}"], \
            ["./no_such_folder", "no such file or folder"]
    elif case == "unknown_name":
        args, expected = ["flickr31k"], ["flickr31k", "flickr30k"]
    else:  # not in this (empty) cache, and offline (conftest): say how to fill the cache
        args, expected = ["flickr30k", "--cache-dir", str(tmp_path / "empty_cache")], \
            ["clip-benchmark/wds_flickr30k", "offline", "dg-heads prepare"]
    result = _prepare(tmp_path, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(e in errors[0] for e in expected), errors[0]


def test_unknown_caption_dataset_in_a_config_is_one_error_line(tmp_path):
    result = run_main("validate", "--config", str(REPO / "configs/data/digit_captions.yaml"),
                      "--config", str(REPO / "configs/method/zero_shot.yaml"),
                      "--model.init_args.clip.model_name", "dg-tiny-vit", "--model.init_args.clip.pretrained", "null",
                      "--data.init_args.dataset", "flickr31k", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "flickr31k" in errors[0] and "flickr30k" in errors[0], result.stderr


TINY = ["--model.init_args.clip.model_name", "dg-tiny-vit", "--model.init_args.clip.pretrained", "null",
        "--data.init_args.num_workers", "0", "--data.init_args.image_size", "32"]


@pytest.mark.parametrize("case", ["no_caption_column", "unreadable_image"])
def test_bad_caption_data_in_a_run_is_one_error_line(tmp_path, case):
    """Through `validate` (zero-shot): a missing caption column fails before the run starts; an
    unreadable image (not the first: met while scoring) names the file."""
    if case == "no_caption_column":
        ref = make_caption_parquet(tmp_path / "d.parquet", ["val", "val"], caption_column="words")
        expected = ["has no caption column", "'words'", str(ref)]
    else:
        ref = make_caption_imagefolder(tmp_path / "if", 3, as_list=True)
        (ref / "test" / "002.png").write_bytes(b"not a png")
        expected = ["cannot read image", "image 2 of", "bad_images"]
    args = ["--data.init_args.val", json.dumps([{"name": "mine", "dataset": str(ref), "split": "test"}])] \
        if case == "unreadable_image" else ["--data.init_args.val", json.dumps([str(ref)])]
    result = run_main("validate", "--config", str(REPO / "configs/data/digit_captions.yaml"),
                      "--config", str(REPO / "configs/method/zero_shot.yaml"), *TINY, *args,
                      "--trainer.default_root_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert all(e in errors[0] for e in expected), errors[0]


def test_skipped_unreadable_image_leaves_its_captions_out(tmp_path):
    ref = make_caption_imagefolder(tmp_path / "if", 3, as_list=True)
    (ref / "test" / "001.png").write_bytes(b"not a png")
    dm = _module(dataset=str(ref), val=[], test=[{"name": "mine", "dataset": str(ref)}], bad_images="skip")
    (batch,) = _eval_batches(dm, "test")[0]
    assert batch["image_index"].tolist() == [0, 2] and batch["captions"] == [_captions(0), _captions(2)]
    assert batch["images"].shape == (2, 3, 16, 16)


def test_lightning_test_on_test_only_data_reads_no_other_split(tmp_path):
    """A folder of one's own with only a test split: `lightning test` reads the test split alone
    (no train or val split is looked for), and splits.json lists its images under the folder's name."""
    ref = make_caption_imagefolder(tmp_path / "mine", 3, as_list=True)
    result = run_main("test", "--config", str(REPO / "configs/data/digit_captions.yaml"),
                      "--config", str(REPO / "configs/method/zero_shot.yaml"), *TINY,
                      "--data.init_args.dataset", str(ref),
                      "--trainer.default_root_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (splits,) = (tmp_path / "runs").rglob("splits.json")
    manifest = json.loads(splits.read_text())
    # named by its folder (a path would put '/' into the metric names `test/<name>/...`)
    assert set(manifest) == {"task", "test"} and manifest["test"]["mine"]["images"] == 3


def test_a_registry_caption_dataset_reads_a_fake_copy_given_as_source(tmp_path):
    """What the shipped-config matrix does for flickr30k and mscoco: the registry's name, a local copy."""
    copy = make_caption_copy(tmp_path / "copy")
    dm = _module(dataset="flickr30k", source={"path": str(copy)})
    assert dm.eval_domains("test") == ["flickr30k"]
    assert [len(dm.train_set()), dm.eval_sizes("val")["flickr30k"], dm.eval_sizes("test")["flickr30k"]] == [24, 8, 8]
    (batch,) = _eval_batches(dm, "test")[0]
    assert batch["captions"] == [_captions(n) for n in range(32, 40)]
