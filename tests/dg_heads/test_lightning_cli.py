"""`dg_heads.lightning_cli`, in process: the order of `--config` files, the run folder's name, and
a parse error as one line (jsonargparse's `ArgumentError` with `exit_on_error=False`) from the
command line and from the hyper-parameters of `--ckpt_path`. The same through the real CLI, as a
user meets them: tests/cli/test_errors.py, test_messages.py."""

import lightning
import pytest
import torch
from jsonargparse import Namespace

from dg_heads.errors import ConfigError, DGHeadsError
from dg_heads.lightning_cli import DGHeadsCLI, check_config_order, config_files, name_run_folder
from tests.conftest import demo_configs


def test_config_files_are_read_in_the_order_given():
    assert config_files(["fit", "--config", "a.yaml", "--trainer.max_epochs", "1", "--config=b.yaml"]) == \
        ["a.yaml", "b.yaml"]


def test_a_model_overlay_before_the_file_that_chooses_the_model_names_both(tmp_path):
    chooser, overlay = tmp_path / "hap.yaml", tmp_path / "small.yaml"
    chooser.write_text("model:\n  class_path: dg_heads.methods.HeadPurification\n")
    overlay.write_text("model:\n  init_args:\n    clip:\n      model_name: dg-tiny-vit\n")
    check_config_order(["--config", str(chooser), "--config", str(overlay)])  # the overlay after: fine
    with pytest.raises(DGHeadsError) as raised:
        check_config_order(["--config", str(overlay), "--config", str(chooser)])
    assert str(raised.value) == (
        f"--config {overlay} changes the model (a `model:` section without class_path) but comes before "
        f"--config {chooser}, which chooses the model (model.class_path): give {overlay} after it (later files win)")


def test_the_run_folder_is_named_after_the_dataset_and_the_method():
    """`{dataset}`: the registry's name (`OfficeHome` -> office_home), or an own dataset's folder
    name; `{method}`: the model class's `run_name` (the baseline's mode). A folder set by hand stays."""
    def config(dataset, logger_args):
        return Namespace(data={"init_args": {"dataset": dataset}},
                         model={"class_path": "dg_heads.methods.CLIPBaseline", "init_args": {"mode": "zero_shot"}},
                         trainer=Namespace(logger={"init_args": logger_args}))

    named = config("OfficeHome", {"save_dir": "runs/{dataset}", "name": "{method}"})
    name_run_folder(named)
    assert named.trainer.logger["init_args"] == {"save_dir": "runs/office_home", "name": "zero_shot"}
    own = config("/data/my_photos/", {"save_dir": "runs/{dataset}", "name": "mine"})
    name_run_folder(own)
    assert own.trainer.logger["init_args"] == {"save_dir": "runs/my_photos", "name": "mine"}


def test_a_command_line_that_does_not_parse_is_one_config_error_line(capsys):
    """Raised, not printed: no usage, no explanation of every Union member tried; the key named."""
    with pytest.raises(ConfigError) as raised:
        DGHeadsCLI(args=[*demo_configs("finetune"), "--trainer.max_epochs", "abc"], run=False)
    message = str(raised.value)
    assert message.startswith("trainer.max_epochs: ") and "abc" in message and "\n" not in message, message
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not hasattr(lightning.pytorch.cli.LightningCLI, "_parse_ckpt_path"),
                    reason="Lightning < 2.5 does not parse a checkpoint's hyper-parameters")
def test_hyper_parameters_of_ckpt_path_that_do_not_parse_are_one_config_error_line(tmp_path):
    """Lightning (>= 2.5) parses `--ckpt_path`'s saved hyper-parameters after the command line;
    a model class that does not exist (any more) is one line naming it, not a traceback."""
    checkpoint = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "dg_heads.methods.NoSuchMethod", "lr": 1.0}, "state_dict": {}},
               checkpoint)
    with pytest.raises(ConfigError) as raised:
        DGHeadsCLI(args=["test", *demo_configs("finetune"), "--ckpt_path", str(checkpoint)])
    assert str(raised.value).startswith("model: ") and "NoSuchMethod" in str(raised.value)
