"""`dg_heads.leakage`, on hand-made checkpoints (a dict with Lightning's `datamodule_hyper_parameters`):
which domains a checkpoint trained on, and the warning (or `strict` error) when a test domain is one of
them. The CLI end to end (a real fit, then `lightning test`): `tests/cli/test_leakage.py`."""

import types

import pytest
import torch

from dg_heads.errors import DGHeadsError
from dg_heads.leakage import check_test_domains, held_out_domains, trained_domains


def _checkpoint(tmp_path, **datamodule) -> str:
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": datamodule}, path)
    return str(path)


def _data(dataset, test_domains):
    return types.SimpleNamespace(hparams={"dataset": dataset, "test_domains": test_domains})


def test_a_checkpoint_trained_on_every_domain_it_did_not_hold_out(tmp_path):
    ckpt = _checkpoint(tmp_path, dataset="pacs", test_domains=["sketch"], root="/data")
    assert trained_domains(ckpt) == ("pacs", ["art_painting", "cartoon", "photo"])  # PACS's 4 domains less sketch
    assert held_out_domains(ckpt) == ("pacs", ["sketch"])


@pytest.mark.parametrize("datamodule", [
    {},  # no DataModule arguments saved (a model trained from Python)
    {"dataset": "pacs"},  # no test domains
    {"dataset": None, "test_domains": ["sketch"]},
])
def test_a_checkpoint_that_does_not_say_is_none(tmp_path, datamodule):
    ckpt = _checkpoint(tmp_path, **datamodule)
    assert trained_domains(ckpt) is None and held_out_domains(ckpt) is None


def test_an_unreadable_checkpoint_is_none(tmp_path):
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert trained_domains(tmp_path / "broken.ckpt") is None and held_out_domains(tmp_path / "broken.ckpt") is None


def test_a_dataset_of_ones_own_knows_its_held_out_domains_only(tmp_path):
    ckpt = _checkpoint(tmp_path, dataset="my_folder_of_scans", test_domains=["site_b"])
    assert trained_domains(ckpt) is None  # its other domains are not in the registry
    assert held_out_domains(ckpt) == ("my_folder_of_scans", ["site_b"])


def test_testing_on_a_source_domain_warns_in_one_line_and_strict_refuses(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, dataset="rotated_digits", test_domains=["75"])
    check_test_domains(ckpt, _data("rotated_digits", ["0", "75"]), strict=False)
    expected = (f"data.init_args.test_domains ['0']: the checkpoint {ckpt} trained on this domain (its source "
                "domains: ['0', '15', '30', '45', '60']); its accuracy there is not domain generalisation")
    assert capsys.readouterr().err.splitlines() == [f"warning: {expected} (--strict true makes this an error)"]
    with pytest.raises(DGHeadsError) as raised:
        check_test_domains(ckpt, _data("rotated_digits", [0, 15]), strict=True)  # ints, as YAML reads `[0, 15]`
    assert str(raised.value).startswith("data.init_args.test_domains ['0', '15']: the checkpoint ")
    assert "trained on these domains" in str(raised.value)


def test_the_dataset_is_the_same_however_it_is_written(tmp_path, capsys):
    """A checkpoint trained with `dataset: PACS` (DomainBed's name) tested with `pacs`, and back."""
    for trained, tested in (("PACS", "pacs"), ("pacs", "PACS")):
        ckpt = _checkpoint(tmp_path, dataset=trained, test_domains=["sketch"])
        check_test_domains(ckpt, _data(tested, ["photo"]), strict=False)
        assert "trained on this domain" in capsys.readouterr().err, (trained, tested)


@pytest.mark.parametrize("name, data", [
    ("best.ckpt", _data("rotated_digits", ["75"])),  # its own held-out domain
    ("best.ckpt", _data("pacs", ["photo"])),  # another dataset: its domains are others
    ("last", _data("rotated_digits", ["0"])),  # Lightning's names, no file: nothing to read
    ("absent.ckpt", _data("rotated_digits", ["0"])),
    (None, _data("rotated_digits", ["0"])),
])
def test_no_word_when_nothing_leaks_or_nothing_is_known(tmp_path, capsys, name, data):
    _checkpoint(tmp_path, dataset="rotated_digits", test_domains=["75"])
    path = str(tmp_path / name) if name and name.endswith(".ckpt") else name
    check_test_domains(path, data, strict=True)
    assert capsys.readouterr().err == ""
