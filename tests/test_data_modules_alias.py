"""`data_modules`, the old name of `dg_heads.data`: old configs' class paths still load, with a warning."""

import importlib
import sys

import pytest

from tests.conftest import CONFIGS, run_cli


def test_an_old_module_path_is_the_same_module_with_a_warning():
    import data_modules

    sys.modules.pop("data_modules.folder", None)  # imported by another test: import it anew
    data_modules._WARNED.discard("data_modules.folder")
    with pytest.warns(FutureWarning, match=r"data_modules\.folder is now dg_heads\.data\.folder"):
        old = importlib.import_module("data_modules.folder")
    from dg_heads.data import folder

    assert old is folder and folder.__spec__.name == "dg_heads.data.folder"
    assert old._cache_path is folder._cache_path  # private names too: old code imported them
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("data_modules.no_such_module")


@pytest.mark.slow
def test_a_config_written_before_the_rename_still_runs(data_root, tmp_path):
    data = (CONFIGS / "data/rotated_digits.yaml").read_text()
    assert "class_path: dg_heads.data.DomainBedDataModule" in data
    old = tmp_path / "old_data.yaml"
    old.write_text(data.replace("dg_heads.data.DomainBedDataModule", "data_modules.DomainBedDataModule"))
    result = run_cli("test", "--config", str(old), "--config", str(CONFIGS / "method/zero_shot.yaml"),
                     "--config", str(CONFIGS / "trainer/demo.yaml"), "--data.init_args.num_workers", "0",
                     "--trainer.limit_test_batches", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("data_modules.DomainBedDataModule is now dg_heads.data.DomainBedDataModule") == 1
    assert (tmp_path / "runs/rotated_digits/zero_shot/version_0/metrics_test.json").exists()
