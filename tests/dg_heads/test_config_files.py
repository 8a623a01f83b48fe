"""`dg_heads.config_files`: a group given as a file of its own (`clip: ../backbone/default.yaml`)
is read by tools outside the Lightning CLI as jsonargparse reads it when it parses the config."""

import dataclasses

import pytest
import yaml

from dg_heads.config_files import inline_group_files
from dg_heads.errors import DGHeadsError


@dataclasses.dataclass
class Spec:  # the shape of `dg_heads.backbone.CLIPSpec`, without importing open_clip
    model_name: str = "dg-tiny-vit"
    pretrained: str | None = None


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    weight_decay: float = 0.0


def _write(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_method_config_reads_as_jsonargparse_reads_it(tmp_path, monkeypatch):
    """The reference is jsonargparse itself: a parser whose `clip` is a dataclass reads the file that
    `clip:` names relative to the config (not to the working directory), as the CLI's parser does."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    _write(tmp_path, {"configs/backbone/default.yaml": "model_name: ViT-B-16\npretrained: openai\n",
                      "configs/method/hap.yaml": "clip: ../backbone/default.yaml\noptim: {lr: 1.0e-3}\n"})
    monkeypatch.chdir(tmp_path / "configs/backbone")  # elsewhere: the path must not resolve from here
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--clip", type=Spec)
    parser.add_argument("--optim", type=Optim)
    config = tmp_path / "configs/method/hap.yaml"
    jsonargparse_reads = yaml.safe_load(parser.dump(parser.parse_args(["--config", str(config)])))

    inlined = inline_group_files(yaml.safe_load(config.read_text()), config.parent)
    assert inlined["clip"] == jsonargparse_reads["clip"] == {"model_name": "ViT-B-16", "pretrained": "openai"}
    assert inlined["optim"] == {"lr": 1.0e-3}  # (jsonargparse adds the dataclass's defaults; the YAML has none)


def test_group_files_are_inlined_recursively_each_relative_to_its_own_folder(tmp_path):
    _write(tmp_path, {"a/method.yaml": "model: {init_args: {clip: ../b/clip.yaml, names: [x, ../b/list.yml]}}\n",
                      "b/clip.yaml": "model_name: ViT-B-16\nextra: sub/more.yaml\n",  # relative to b/
                      "b/sub/more.yaml": "depth: 2\n",
                      "b/list.yml": "[1, 2]\n"})
    node = yaml.safe_load((tmp_path / "a/method.yaml").read_text())
    assert inline_group_files(node, tmp_path / "a") == {"model": {"init_args": {
        "clip": {"model_name": "ViT-B-16", "extra": {"depth": 2}}, "names": ["x", [1, 2]]}}}


def test_a_name_of_no_file_an_absolute_path_and_an_empty_file(tmp_path):
    _write(tmp_path, {"empty.yaml": "", "abs.yaml": "k: v\n"})
    node = {"missing": "nowhere.yaml", "text": "not a file", "number": 3,
            "absolute": str(tmp_path / "abs.yaml"), "empty": "empty.yaml"}
    assert inline_group_files(node, tmp_path) == {"missing": "nowhere.yaml", "text": "not a file", "number": 3,
                                                  "absolute": {"k": "v"}, "empty": {}}


def test_a_group_file_that_is_not_yaml_is_one_error_naming_it(tmp_path):
    _write(tmp_path, {"bad.yaml": "clip: [unclosed\n"})
    with pytest.raises(DGHeadsError, match=f"^config {tmp_path / 'bad.yaml'} is not YAML: "):
        inline_group_files({"clip": "bad.yaml"}, tmp_path)
