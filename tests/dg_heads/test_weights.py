"""Pretrained weights on machines without network: cached weights load without asking the hub,
missing ones fail at once with one line naming `dg-heads weights MODEL TAG`. No test here
reaches the network (the socket guard of conftest.py fails any attempt)."""

import time

import huggingface_hub.constants
import open_clip
import pytest
import torch
from open_clip import pretrained as oc_pretrained

from dg_heads.backbone import CLIPSpec, create_clip
from tests.conftest import demo_configs, run_main

REPO_ID, REVISION = "dg-heads/tiny-test", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, and a pretrained tag `dgtest` of the tiny model published on the hub
    the way open_clip's real tags are (`hf_hub: owner/repo/`)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # CLI subprocesses
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # this process (read at import)
    tags = dict(oc_pretrained._PRETRAINED.get("dg-tiny-vit", {}))
    tags["dgtest"] = oc_pretrained._pcfg(hf_hub=f"{REPO_ID}/")
    monkeypatch.setitem(oc_pretrained._PRETRAINED, "dg-tiny-vit", tags)
    return cache


def put_in_cache(cache, state_dict, filename="open_clip_pytorch_model.bin"):
    """Lay a file out as huggingface_hub's cache does: snapshots/<revision>/<file>, refs/main."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    torch.save(state_dict, repo / "snapshots" / REVISION / filename)
    return repo / "snapshots" / REVISION / filename


@pytest.mark.parametrize("offline_how", ["HF_HUB_OFFLINE", "no network"])
def test_cached_weights_load_without_network(offline_how, hub_cache, monkeypatch):
    if offline_how == "no network":  # HF_HUB_OFFLINE unset: the socket guard is the missing network
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    torch.manual_seed(123)
    saved = open_clip.create_model("dg-tiny-vit").state_dict()
    put_in_cache(hub_cache, saved)
    start = time.perf_counter()
    model, _ = create_clip(CLIPSpec(model_name="dg-tiny-vit", pretrained="dgtest"))
    assert time.perf_counter() - start < 20
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("offline_how", ["HF_HUB_OFFLINE", "no network"])
def test_missing_weights_without_network_fail_at_once_naming_the_command(offline_how, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))  # run_main: here
    if offline_how == "no network":
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    result = run_main("fit", *demo_configs("finetune"),
                      "--model.init_args.clip.model_name", "ViT-B-16", "--model.init_args.clip.pretrained", "openai",
                      cwd=tmp_path)
    assert time.perf_counter() - start < 30  # jsonargparse's start-up included; no download retries
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "pretrained weights ViT-B-16 'openai' are not in the cache" in errors[0]
    assert "run `dg-heads weights ViT-B-16 openai` on a machine with network" in errors[0]


def test_weights_command_says_where_cached_weights_are_and_fails_offline_when_missing(hub_cache, tmp_path):
    result = run_main("weights", "dg-tiny-vit", "dgtest", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: pretrained weights dg-tiny-vit 'dgtest'")
    assert "HF_HUB_OFFLINE is set" in result.stderr
    path = put_in_cache(hub_cache, {"x": torch.zeros(1)})
    result = run_main("weights", "dg-tiny-vit", "dgtest", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"dg-tiny-vit dgtest: already cached: {path}"
    result = run_main("weights", "dg-tiny-vit", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "pretrained tag 'nope' is unknown for dg-tiny-vit" in result.stderr
