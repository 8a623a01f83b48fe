"""The contract every method class keeps, in process with a plain `L.Trainer`:
build -> one training step (or its search) -> evaluate (validate + test) -> checkpoint save and
load with the same predictions.

A new method is tested by adding one `Method` to `METHODS` (the class and its init args, built
from Python: no config file). Each case takes a few seconds: the tiny random-init CLIP
(`dg-tiny-vit`), RotatedDigits at 32 px, one batch of each split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import lightning as L
import pytest
import torch

from dg_heads.backbone import CLIPSpec
from dg_heads.data import DomainBedDataModule
from dg_heads.export_cli import load_module
from dg_heads.methods import AttentionAblation, CLIPBaseline, GatingSpec, HeadPurification, LoRASpec, SearchSpec
from dg_heads.optim import OptimSpec

SOURCES, HELD_OUT = ["0", "15", "30", "45", "60"], "75"


@dataclass
class Method:
    """One method class with its init args. `fit`: `trains` (one optimiser step, which must change
    the predictions, and the checkpoint must hold that change), `searches` (fit runs a
    training-free search and no optimiser step; on the random-init model every head's ablation
    leaves the source accuracy as it is, so scan and GA find an empty mask: `aat_bp`'s top-k
    mask is the one whose round trip is checked) or `none` (nothing to fit: evaluate only)."""

    cls: type
    init_args: Callable[[], dict[str, Any]] = dict  # a factory: specs are mutable dataclasses
    fit: Literal["trains", "searches", "none"] = "trains"
    optim: OptimSpec = field(default_factory=lambda: OptimSpec(lr=1e-2, weight_decay=0.0, schedule="constant"))


def _ga(**changes) -> SearchSpec:
    search = SearchSpec(strategy="ga", max_scoring_batches=1)
    return replace(search, ga=replace(search.ga, **changes))


METHODS: dict[str, Method] = {
    "zero_shot": Method(CLIPBaseline, lambda: {"mode": "zero_shot"}, fit="none"),
    "linear_probe": Method(CLIPBaseline, lambda: {"mode": "linear_probe"}),
    "finetune": Method(CLIPBaseline, lambda: {"mode": "finetune"}),
    "plain_lora": Method(HeadPurification, lambda: {"lora": LoRASpec(head_aware=False),
                                                    "gating": GatingSpec(enabled=False, mmd_weight=0.0)}),
    "hap": Method(HeadPurification, lambda: {"lora": LoRASpec(), "gating": GatingSpec()}),
    "aat_scan": Method(AttentionAblation, lambda: {"search": SearchSpec(strategy="scan", scan_top_k=3,
                                                                        max_scoring_batches=1)}, fit="searches"),
    "aat_ga": Method(AttentionAblation, lambda: {"search": _ga(population=6, generations=2, init_density=0.2)},
                     fit="searches"),
    "aat_bp": Method(AttentionAblation, lambda: {"search": SearchSpec(strategy="bp", bp_binarize="topk", bp_top_k=2)}),
}


def _build(method: Method) -> L.LightningModule:
    L.seed_everything(0, verbose=False)  # random-init backbone: the checkpoint rebuilds it from this seed
    clip = CLIPSpec(model_name="dg-tiny-vit", pretrained=None, templates=["a photo of the digit {}."])
    return method.cls(clip=clip, optim=method.optim, **method.init_args())


def _data(root) -> DomainBedDataModule:
    return DomainBedDataModule("rotated_digits", [HELD_OUT], root=str(root), image_size=32, batch_size_per_domain=4,
                               eval_batch_size=16, num_workers=0, train_augment="none")


def _trainer(folder) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_train_batches=1, limit_val_batches=1,
                     limit_test_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                     # (bar off: an in-process unit test of hooks, its output unread; every CLI test runs with it on)
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=folder)


@torch.no_grad()
def _logits(model: L.LightningModule, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(images)


def _evaluate(trainer: L.Trainer, model: L.LightningModule, data: DomainBedDataModule) -> dict[str, float]:
    trainer.validate(model, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    trainer.test(model, datamodule=data, verbose=False)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    return metrics


@pytest.mark.parametrize("name", list(METHODS))
def test_build_step_evaluate_and_checkpoint_round_trip(name, data_root, tmp_path):
    method = METHODS[name]
    model, data = _build(method), _data(data_root)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    trainer = _trainer(tmp_path)

    # one training step, or the search
    if method.fit != "none":
        trainer.fit(model, datamodule=data)
        assert trainer.global_step == (1 if method.fit == "trains" else 0), trainer.global_step
        assert not trainer.interrupted

    # evaluate: every source domain's `out` split, then the held-out domain
    metrics = _evaluate(trainer, model, data)
    expected = {"val/acc", *(f"val/acc/{d}" for d in SOURCES), "test/acc", f"test/acc/{HELD_OUT}"}
    assert expected <= set(metrics), sorted(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in expected), metrics
    assert metrics[f"test/n/{HELD_OUT}"] == 16 and metrics[f"val/n/{SOURCES[0]}"] > 0

    # checkpoint round trip: the reloaded module predicts exactly as the one that was saved
    before = _logits(model, images)
    path = tmp_path / "round_trip.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    assert type(loaded) is type(model)
    after = _logits(loaded, images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert torch.equal(after.argmax(-1), before.argmax(-1))
    # ... and it evaluates to the same numbers in a fresh trainer
    reloaded = _evaluate(_trainer(tmp_path / "reloaded"), loaded, _data(data_root))
    assert all(math.isclose(reloaded[k], metrics[k], abs_tol=1e-6) for k in expected), (reloaded, metrics)

    # what fit did is in the checkpoint (else the round trip would pass by rebuilding the untrained model)
    if method.fit == "trains":
        untrained = _build(method)
        untrained.classifier = torch.nn.Parameter(untrained.text_classifier(data.class_names), requires_grad=False)
        untrained = _logits(untrained, images)  # (the prompt classifier `setup` builds)
        assert not torch.allclose(after, untrained, rtol=1e-5, atol=1e-6), f"{name}: fit changed nothing"


def test_every_method_class_is_in_the_contract():
    """A new LightningModule in `dg_heads.methods` must be added to METHODS."""
    import dg_heads.methods as methods
    from dg_heads.methods.base import DGModule

    classes = {c for c in vars(methods).values()
               if isinstance(c, type) and issubclass(c, DGModule) and c is not DGModule}
    assert classes == {m.cls for m in METHODS.values()}


@pytest.mark.parametrize("name", ["hap", "aat_bp"])
def test_checkpoint_of_a_python_built_model_loads_in_a_fresh_process(name, data_root, tmp_path):
    """`Cls.load_from_checkpoint(path)` in a notebook's fresh kernel: torch's weights-only loader (its
    default) must accept the spec dataclasses that a model built in Python keeps in its hparams."""
    import subprocess
    import sys

    method = METHODS[name]
    model, trainer = _build(method), _trainer(tmp_path)
    trainer.fit(model, datamodule=_data(data_root))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    code = (f"import lightning as L; from dg_heads.methods import {method.cls.__name__} as M; "
            "L.seed_everything(0, verbose=False); "  # the random-init backbone is rebuilt from the seed
            f"m = M.load_from_checkpoint({str(path)!r}, map_location='cpu'); print(type(m.hparams['clip']).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("CLIPSpec")
