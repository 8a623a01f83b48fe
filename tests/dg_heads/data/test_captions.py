"""Caption data references and splits (`dg_heads.data.captions`), in process: a registry name, a hub id or
a local path resolved to its source, config mappings checked key by key, captions read from a string or a
list, a split found by name or held out of train (fixed, disjoint), and each mistake one `DGHeadsError`."""

from __future__ import annotations

import numpy as np
import pytest

from dg_heads.data.captions import CaptionSource, CaptionSplit, _as_captions, _pick, holdout_rows, resolve, source_from
from dg_heads.data.errors import DGHeadsError


def test_a_reference_resolves_to_its_source(tmp_path):
    name, source, info = resolve("flickr30k")
    assert (name, source, info.name) == ("flickr30k", CaptionSource(name="clip-benchmark/wds_flickr30k",
                                                                      holdout_val=1014), "flickr30k")
    name, source, info = resolve("flickr30k", {"path": "/copies/f30k"})  # a local copy of a registry dataset
    assert (name, source, info.name) == ("flickr30k", CaptionSource(path="/copies/f30k"), "flickr30k")
    assert resolve("digit_captions")[1] is None  # built in: no source
    assert resolve("someone/captions") == ("someone/captions", CaptionSource(name="someone/captions"), None)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_dict.json").write_text("{}")
    assert resolve(str(saved)) == ("saved", CaptionSource(path=str(saved)), None)
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert resolve(str(folder) + "/") == ("pictures", CaptionSource(name=str(folder) + "/"), None)
    parquet = tmp_path / "k.parquet"
    parquet.write_bytes(b"")
    assert resolve(str(parquet)) == ("k.parquet", CaptionSource(data_files=[str(parquet)]), None)


def test_unknown_references_and_keys_are_one_error_naming_what_is_known(tmp_path):
    with pytest.raises(DGHeadsError, match=r"data.init_args.dataset: unknown caption dataset 'flickr31k'; "
                                           r"expected one of \['digit_captions', 'flickr30k', 'mscoco'"):
        resolve("flickr31k")
    with pytest.raises(DGHeadsError, match=r"\(no such path\)$"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(DGHeadsError, match=r"here: unknown key\(s\) \['colum', 'nme'\]; expected some of \['name', "):
        source_from({"nme": "x", "colum": "y", "path": "p"}, "here")
    with pytest.raises(DGHeadsError, match=r"here: expected a mapping of CaptionSource fields, got 'x'"):
        source_from("x", "here")
    assert source_from({"name": "a/b", "holdout_val": 3}, "here") == CaptionSource(name="a/b", holdout_val=3)


def test_captions_from_a_string_a_line_each_or_a_list():
    source = CaptionSource(name="mine")
    assert _as_captions(" a dog \n\nthe dog\n", 0, "txt", source) == ["a dog", "the dog"]
    assert _as_captions(["a dog", None, "  ", "the dog "], 0, "captions", source) == ["a dog", "the dog"]
    with pytest.raises(DGHeadsError, match=r"mine: row 4 of caption column 'txt' holds int 5; expected a string"):
        _as_captions(5, 4, "txt", source)
    with pytest.raises(DGHeadsError, match=r"mine: row 2 has no caption in column 'txt'"):
        _as_captions(" \n", 2, "txt", source)


def test_held_out_val_is_a_fixed_sorted_share_of_train():
    held = holdout_rows(10, 3, "mine")
    assert len(set(held.tolist())) == 3 and held.tolist() == sorted(held.tolist()) and 0 <= held.min() < held.max() < 10
    assert np.array_equal(holdout_rows(10, 3, "mine"), held)
    for count in (0, 10):
        with pytest.raises(DGHeadsError, match=rf"holdout_val={count} of caption dataset mine: it has 10 training"):
            holdout_rows(10, count, "mine")


def test_a_split_by_name_or_held_out_of_train():
    import datasets

    parts = {"train": datasets.Dataset.from_dict({"txt": [f"t{i}" for i in range(6)]}),
             "test": datasets.Dataset.from_dict({"txt": ["s0", "s1"]})}
    _, rows, how = _pick(parts, CaptionSource(name="mine"), "test")
    assert rows.tolist() == [0, 1] and how == "split 'test'"
    with pytest.raises(DGHeadsError, match=r"split 'val' of caption dataset mine is empty or missing: its splits "
                                           r"are \['train', 'test'\] and it has no split column"):
        _pick(parts, CaptionSource(name="mine"), "val")
    source = CaptionSource(name="mine", holdout_val=2)
    _, val, _ = _pick(parts, source, "val")
    _, train, how = _pick(parts, source, "train")
    assert len(val) == 2 and len(train) == 4 and sorted([*val, *train]) == list(range(6))
    assert how == "split 'train', less 2 held out as val"


def test_head_keeps_the_first_images():
    split = CaptionSplit("d", "d", "test", None, [["a"], ["b"], ["c"]], ["0", "1", "2"])
    assert split.head(None) is split and split.head(5) is split
    assert (split.head(2).captions, split.head(2).ids, len(split.head(2))) == ([["a"], ["b"]], ["0", "1"], 2)
