"""`SplitsManifest`: `splits.json` in the run folder holds the DataModule's `split_manifest`, built on
rank 0 only; a DataModule without one (or no DataModule) writes nothing."""

from __future__ import annotations

import json
from types import SimpleNamespace

from dg_heads.callbacks import SplitsManifest


class _Data:
    def __init__(self) -> None:
        self.built = 0

    @property
    def split_manifest(self) -> dict:
        self.built += 1
        return {"test_domains": ["75"], "0": {"in": ["a.png"], "out": ["b.png"]}}


def _trainer(folder, datamodule, rank_zero=True):
    return SimpleNamespace(datamodule=datamodule, is_global_zero=rank_zero, logger=SimpleNamespace(log_dir=folder))


def test_splits_json_is_the_datamodules_manifest(tmp_path):
    data = _Data()
    SplitsManifest().setup(_trainer(tmp_path / "run", data), None, "fit")
    assert json.loads((tmp_path / "run" / "splits.json").read_text()) == \
        {"test_domains": ["75"], "0": {"in": ["a.png"], "out": ["b.png"]}}
    assert data.built == 1


def test_other_ranks_build_nothing_and_data_without_a_manifest_writes_nothing(tmp_path):
    data = _Data()
    SplitsManifest().setup(_trainer(tmp_path / "rank1", data, rank_zero=False), None, "fit")
    assert data.built == 0 and not (tmp_path / "rank1").exists()
    plain = SimpleNamespace()
    plain.split_manifest = {"set": "on the instance, not the class"}  # only a class's property counts
    for datamodule in (None, object(), plain):
        SplitsManifest().setup(_trainer(tmp_path / "none", datamodule), None, "validate")
    assert not (tmp_path / "none").exists()
