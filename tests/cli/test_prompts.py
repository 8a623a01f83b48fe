"""Class prompts belong with the data: the demo preset composed with another dataset carries none
of RotatedDigits' digit prompts."""

import types

import torch
import yaml

from tests.conftest import CONFIGS, run_main


def _config(tmp_path, dataset: str) -> dict:
    files = [CONFIGS / f"data/{dataset}.yaml", CONFIGS / "method/finetune.yaml", CONFIGS / "trainer/demo.yaml"]
    result = run_main("fit", *[a for f in files for a in ("--config", str(f))], "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


def test_the_demo_preset_with_another_dataset_carries_no_digit_prompts(tmp_path):
    pacs = _config(tmp_path, "pacs")
    assert "digit" not in yaml.safe_dump(pacs)
    assert pacs["model"]["init_args"]["clip"]["templates"] is None  # the data's prompts, else "a photo of a {}."
    assert pacs["data"]["init_args"]["templates"] is None
    digits = _config(tmp_path, "rotated_digits")
    assert digits["data"]["init_args"]["templates"] == ["a photo of the digit {}."]


def test_a_model_without_templates_takes_the_datas(data_root):
    from dg_heads.backbone import CLIPSpec
    from dg_heads.data import DomainBedDataModule
    from dg_heads.methods import CLIPBaseline

    class Trainer:  # what `setup` reads of the trainer
        def __init__(self, datamodule):
            self.datamodule = datamodule
            self.strategy = types.SimpleNamespace(root_device=torch.device("cpu"))  # where the text head is built

    for templates, expected in ((["a photo of the digit {}."], ["a photo of the digit {}."]),
                                (None, ["a photo of a {}."])):
        data = DomainBedDataModule("rotated_digits", ["75"], image_size=32, templates=templates)
        model = CLIPBaseline(CLIPSpec(model_name="dg-tiny-vit"))
        assert model.templates is None
        model._trainer = Trainer(data)
        data.setup("fit")
        model.setup("fit")
        assert model.templates == expected
