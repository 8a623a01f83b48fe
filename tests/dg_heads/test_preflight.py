"""`dg_heads.preflight` (what `dg-heads sweep` checks before queueing anything): a key's value as the
CLI resolves it from config files and arguments, a dataset folder the DataModule could not split,
weights not in the cache; each problem once, with the command that fixes it. The sweep end to end:
`test_sweep.py`."""

import types

import pytest

from dg_heads.preflight import config_value, dataset_problem, preflight, weights_problem
from tests.conftest import make_benchmark

ROOT = "data.init_args.root"


def _configs(tmp_path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return [str(tmp_path / name) for name in files]


def test_a_later_config_wins_and_an_argument_wins_over_configs(tmp_path):
    configs = _configs(tmp_path, {"a.yaml": "data:\n  init_args: {root: /a, test_domains: [sketch]}\n",
                                  "b.yaml": "data:\n  init_args: {root: /b}\n",
                                  "c.yaml": "trainer: {max_epochs: 3}\n"})  # says nothing of the root
    assert config_value(configs, [], ROOT) == "/b"
    assert config_value(configs, [], "data.init_args.test_domains") == ["sketch"]  # only a.yaml sets it
    assert config_value(configs, ["--data.init_args.root", "/c"], ROOT) == "/c"
    assert config_value(configs, ["--data.init_args.root", "/c", "--data.init_args.root=/d"], ROOT) == "/d"
    assert config_value(configs, ["--data.init_args.root=/d", "--data.init_args.root", "/c"], ROOT) == "/c"
    assert config_value(configs, ["--data.init_args.hf", "null"], "data.init_args.hf", "x") is None  # YAML
    assert config_value(configs, ["--data.init_args.rootx", "/e"], ROOT) == "/b"  # another key
    assert config_value(configs, [], "data.init_args.hf", "default") == "default"
    assert config_value(configs, [], "trainer.max_epochs.x") is None  # below a plain value: not set


def test_a_group_file_is_read_as_the_cli_reads_it_and_an_unreadable_config_is_skipped(tmp_path):
    configs = _configs(tmp_path, {"backbone/b.yaml": "model_name: ViT-L-14\npretrained: openai\n",
                                  "method/m.yaml": "model:\n  init_args:\n    clip: ../backbone/b.yaml\n",
                                  "broken.yaml": "model: [unclosed\n"})
    assert config_value(configs, [], "model.init_args.clip.model_name") == "ViT-L-14"
    assert config_value([*configs, str(tmp_path / "absent.yaml")], [], "model.init_args.clip.pretrained") == "openai"


def test_a_dataset_folder_the_datamodule_could_not_split(tmp_path):
    assert dataset_problem("rotated_digits", tmp_path) is None  # built in: nothing on disk
    missing = dataset_problem("pacs", tmp_path)
    assert missing.startswith(f"pacs: dataset folder {tmp_path / 'PACS'} does not exist; ")
    assert missing.endswith(f"; run `dg-heads prepare pacs --root {tmp_path}` (downloads it where it can, else "
                            "prints the steps, then verifies the copy)")
    make_benchmark(tmp_path, "vlcs", size=4)  # one image per class: a layout the DataModule can split
    assert dataset_problem("vlcs", tmp_path) is None
    (tmp_path / "VLCS/SUN09/bird").rename(tmp_path / "VLCS/SUN09/brid")
    problem = dataset_problem("vlcs", tmp_path)
    assert problem.startswith("vlcs: class folders of") and "dg-heads prepare vlcs" in problem


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache (open_clip's download goes there)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_weights_not_in_the_cache_name_the_command_that_fetches_them(empty_cache):
    assert weights_problem("ViT-B-16", "openai") == (
        "pretrained weights ViT-B-16 openai are not in the cache; run `dg-heads weights ViT-B-16 openai` on a "
        "machine with network (a login node)")
    # the cache's layout, as huggingface_hub writes it: refs/main names the snapshot that holds the file
    repo = empty_cache / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("0123abcd")
    (repo / "snapshots/0123abcd").mkdir(parents=True)
    (repo / "snapshots/0123abcd/open_clip_model.safetensors").write_bytes(b"weights")
    assert weights_problem("ViT-B-16", "openai") is None


def test_weights_given_as_a_file_none_or_an_unknown_tag(tmp_path, empty_cache):
    assert weights_problem("ViT-B-16", str(tmp_path / "mine.pt")) == (
        f"weights file {tmp_path / 'mine.pt'} (model.init_args.clip.pretrained) does not exist")
    (tmp_path / "mine.pt").write_bytes(b"weights")
    assert weights_problem("ViT-B-16", str(tmp_path / "mine.pt")) is None
    for none in (None, "", "none", "null"):
        assert weights_problem("ViT-B-16", none) is None  # random init: nothing to fetch


@pytest.mark.parametrize("model, tag", [("ViT-Q-99", "openai"), ("ViT-B-16", "no_such_tag")])
def test_an_unknown_model_or_tag_is_left_to_the_jobs_own_check(empty_cache, model, tag):
    """As preflight's comment says: the job's check (`--print_config`) names an unknown model or tag;
    a line telling to fetch weights that do not exist would mislead."""
    assert weights_problem(model, tag) is None


def _job(dataset, *args, configs=()):
    return types.SimpleNamespace(configs=list(configs), method="hap", dataset=dataset, hparams={},
                                 extra_args=[*args, "--model.init_args.clip.pretrained", "null"])


def test_each_problem_once_over_all_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("DG_HEADS_DATA", str(tmp_path / "default"))
    configs = _configs(tmp_path, {"root.yaml": f"data:\n  init_args: {{root: {tmp_path / 'given'}}}\n"})
    jobs = [_job("pacs", configs=configs), _job("pacs", "--model.init_args.optim.lr", "1e-4", configs=configs),
            _job("vlcs"),  # no root given: $DG_HEADS_DATA
            _job("rotated_digits"),  # built in
            _job("pacs", "--data.init_args.hf", "{path: org/pacs}")]  # read from the Hub: no folder
    problems = preflight(jobs)
    assert [p.split(";")[0] for p in problems] == [
        f"pacs: dataset folder {tmp_path / 'given/PACS'} does not exist",
        f"vlcs: dataset folder {tmp_path / 'default/VLCS'} does not exist"]
