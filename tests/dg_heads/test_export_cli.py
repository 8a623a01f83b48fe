"""`dg-heads export CHECKPOINT --out FILE` (`dg_heads/export_cli.py`): its command line and the
checkpoints it refuses, in-process. Exporting a trained method and loading the file with plain
open_clip is tested with each method (test_hap.py, aat/test_module.py, cli/test_messages.py)."""

import torch

from tests.conftest import run_main


def test_help_lists_the_checkpoint_and_out_with_their_help(tmp_path):
    result = run_main("export", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for words in ("usage: dg-heads export", "--out OUT checkpoint", "a dg-heads checkpoint (a run's .ckpt)",
                  "weights file to write (.pt)", "loadable with `open_clip.create_model(model_name, pretrained=FILE)`"):
        assert words in text, result.stdout


def test_a_missing_out_is_one_error_line_naming_it(tmp_path):
    result = run_main("export", "run.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr == "error: the following arguments are required: --out\n"


def test_a_checkpoint_that_is_missing_or_not_dg_heads_is_one_error_line(tmp_path):
    missing = run_main("export", "nope.ckpt", "--out", "w.pt", cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (2, "error: checkpoint nope.ckpt does not exist\n")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")  # a Lightning checkpoint of something else
    other = run_main("export", "other.ckpt", "--out=w.pt", cwd=tmp_path)
    assert (other.returncode, other.stderr) == (2, "error: other.ckpt is not a dg-heads checkpoint (no 'dg_heads' "
                                                   "entry)\n")
    assert not (tmp_path / "w.pt").exists()
