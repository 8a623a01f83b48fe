"""On a GPU node Lightning reports `self.device` as the strategy's device during `setup`, while
the weights are still on the CPU (lightning/pytorch/trainer/call.py, `_call_setup_hook`). What a
method builds in `setup` must follow the weights, not that property."""

from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer import call

from dg_heads.data import DomainBedDataModule
from dg_heads.methods import AttentionAblation, CLIPBaseline, HeadPurification
from tests.conftest import demo_configs, run_cli

FAKE_ROOT_DEVICE = torch.device("meta")  # what a CUDA node reports there: a device the weights are not on yet


@pytest.fixture()
def gpu_like_setup(monkeypatch):
    """Lightning's own setup hook, with the strategy's root device faked while it runs."""
    real = call._call_setup_hook

    def setup_hook(trainer):
        with mock.patch.object(type(trainer.strategy), "root_device", new_callable=mock.PropertyMock,
                               return_value=FAKE_ROOT_DEVICE):
            real(trainer)

    monkeypatch.setattr(call, "_call_setup_hook", setup_hook)


@pytest.mark.parametrize("method", [lambda: CLIPBaseline(mode="zero_shot"), lambda: HeadPurification(),
                                    lambda: AttentionAblation()], ids=["baseline", "hap", "aat"])
def test_setup_builds_the_text_head_on_the_strategy_root_device(method, gpu_like_setup, data_root, tmp_path,
                                                                monkeypatch):
    """The zero-shot head is built where the weights will run: the strategy's root device (`cuda:N`
    on a GPU node; DomainNet's 27,600 prompts would take tens of minutes on each rank's CPU), with
    the text tower put there for the build, never the image tower; after `setup` every weight is
    the CPU tensor it was, and the classifier is on the CPU with them (the strategy moves all)."""
    import dg_heads.backbone

    model = method()
    text, image = model.clip.token_embedding.weight, model.clip.visual.conv1.weight
    before = {"text": (text.data_ptr(), text.detach().clone()), "image": (image.data_ptr(), image.detach().clone())}
    seen = {}

    def build(clip, tokenizer, class_names, templates, num_classes_per_batch, device):
        seen.update(device=torch.device(device), text=clip.token_embedding.weight.device,
                    projection=clip.text_projection.device, image=clip.visual.conv1.weight.device,
                    per_batch=num_classes_per_batch, reported=model.device)
        return torch.ones(clip.text_projection.shape[1], len(class_names))  # what `.cpu()` of the device's result gives

    monkeypatch.setattr(dg_heads.backbone, "build_zero_shot_classifier", build)
    data = DomainBedDataModule("rotated_digits", test_domains=["75"], image_size=32, num_workers=0,
                               eval_batch_size=256)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        # (bar off: an in-process unit test of hooks, its output unread; every CLI test runs with it on)
                        default_root_dir=tmp_path, enable_progress_bar=False, limit_val_batches=1,
                        enable_model_summary=False)
    trainer.validate(model, datamodule=data, verbose=False)
    assert seen["reported"] == FAKE_ROOT_DEVICE  # Lightning's fake: the emulation is in place
    assert seen["device"] == seen["text"] == seen["projection"] == FAKE_ROOT_DEVICE
    assert seen["image"].type == "cpu" and seen["per_batch"] == 1024  # one template: 1,024 prompts a batch
    for name, tensor in (("text", text), ("image", image)):
        assert tensor.device.type == "cpu" and tensor.data_ptr() == before[name][0]
        assert torch.equal(tensor.detach(), before[name][1])
    assert model.classifier.device.type == "cpu" and model.classifier.shape[0] == 10
    assert torch.equal(model.classifier, torch.ones(10, model.clip.text_projection.shape[1]))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA DDP path (make gpu-check runs this file on a GPU)")
def test_a_training_free_search_runs_under_ddp_on_cuda(data_root, tmp_path):
    """scan / GA train nothing: DDP would refuse to wrap them, and on CUDA Lightning's DDP strategy
    also asserts the wrapper is there when it registers its hooks (a gloo/CPU run never gets there;
    the CPU's two-process search is aat/test_module.py's). A real one-GPU DDP (NCCL) search runs."""
    result = run_cli("fit", *demo_configs("aat_scan"), "--data.init_args.num_workers", "0",
                     "--model.init_args.search.max_scoring_batches", "1", "--trainer.accelerator", "gpu",
                     "--trainer.devices", "1", "--trainer.strategy", "ddp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs/rotated_digits/aat_scan/version_0/ablation.json").is_file()
