"""Hugging Face datasets as a DG source: a saved dataset, parquet files and a data folder by name give the
folder's table; a missing domain column and an unreachable hub dataset are one clear error."""

import json
from pathlib import Path

import numpy as np
import pytest

from dg_heads.data import DomainBedDataModule
from dg_heads.data.hf_source import HFSource
from dg_heads.data.registry import get_dataset
from dg_heads.data_cli import splits_main
from dg_heads.errors import DGHeadsError
from tests.conftest import make_benchmark


def _hf_copy(folder_root: Path, out: Path, with_domain: bool = True):
    """The fake PACS copy as a HF dataset: images as bytes, labels a ClassLabel in another order,
    domains spelled differently, relative paths as ids."""
    import datasets

    info = get_dataset("pacs")
    shuffled_names = list(reversed(info.classes))
    rows = {"image": [], "label": [], "domain": [], "path": []}
    for domain in info.domains:
        for cls in info.classes:
            for f in sorted((folder_root / "PACS" / domain / cls).iterdir()):
                rows["image"].append({"bytes": f.read_bytes(), "path": None})
                rows["label"].append(shuffled_names.index(cls))
                rows["domain"].append(domain.replace("_", " ").title())
                rows["path"].append(f"{domain}/{cls}/{f.name}")
    if not with_domain:
        del rows["domain"]
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=shuffled_names),
                "path": datasets.Value("string")}
    if with_domain:
        features["domain"] = datasets.Value("string")
    order = np.random.default_rng(0).permutation(len(rows["path"]))  # rows in no particular order
    ds = datasets.Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()},
                                    features=datasets.Features(features))
    ds.save_to_disk(str(out / "saved"))
    (out / "parquet").mkdir(parents=True)
    ds.to_parquet(str(out / "parquet" / "train-00000.parquet"))
    return out


def _same_table(a: DomainBedDataModule, b: DomainBedDataModule) -> None:
    assert a.table.ids.to_pylist() == b.table.ids.to_pylist()
    assert np.array_equal(a.table.labels, b.table.labels) and np.array_equal(a.table.domain_of, b.table.domain_of)
    assert a.split_manifest["domains"] == b.split_manifest["domains"]
    for index in range(len(a.test_domains)):
        xa, ya = next(iter(a.test_dataloader()[index]))
        xb, yb = next(iter(b.test_dataloader()[index]))
        assert np.array_equal(ya, yb) and np.allclose(xa, xb)


def test_hf_saved_parquet_and_by_name_give_the_folders_table(tmp_path, capsys):
    make_benchmark(tmp_path, "pacs", per_class=2, size=8)
    hf = _hf_copy(tmp_path, tmp_path / "hf")

    def module(**source):
        dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0,
                                 hf=None if not source else HFSource(id_column="path", **source))
        dm.setup("fit")
        return dm

    folder = module()
    _same_table(folder, module(path=str(hf / "saved")))
    _same_table(folder, module(data_files=[str(hf / "parquet" / "*.parquet")]))
    _same_table(folder, module(name=str(hf / "parquet")))  # load_dataset(name): a hub name or a data folder
    splits_main(["--dataset", "pacs", "--hf", f"{{path: {hf / 'saved'}, id_column: path}}"])
    assert json.loads(capsys.readouterr().out)["domains"] == folder.split_manifest["domains"]
    # (a bad `--hf` mapping: tests/dg_heads/test_data_cli.py)


def test_hf_dataset_without_a_domain_column_is_named(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=1, size=4)
    hf = _hf_copy(tmp_path, tmp_path / "hf", with_domain=False)
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), hf=HFSource(name=str(hf / "parquet")))
    with pytest.raises(DGHeadsError, match=r"has no domain column 'domain'; its columns are \['image', 'label', "
                                           r"'path'\]: set data.hf.domain_column"):
        dm.setup("fit")


def test_unreachable_hub_dataset_is_one_clear_error(tmp_path):
    dm = DomainBedDataModule("pacs", ["sketch"], hf=HFSource(name="no-such-owner/no-such-dataset"))
    with pytest.raises(DGHeadsError, match="cannot load Hugging Face dataset no-such-owner/no-such-dataset"):
        dm.setup("fit")
