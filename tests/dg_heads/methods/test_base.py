"""A training step at GPU speed: no host sync in the step, and a non-finite loss skipped on the
device (weights and AdamW state untouched) and reported within `log_every_n_steps` steps."""

from dataclasses import dataclass, field

import lightning as L
import pytest
import torch

from dg_heads.backbone import CLIPSpec
from dg_heads.data import DomainBedDataModule
from dg_heads.errors import DGHeadsError
from dg_heads.methods import CLIPBaseline, DGModule
from dg_heads.op_counter import lightning_syncs
from dg_heads.optim import OptimSpec, fused_adamw_available


@pytest.mark.parametrize("method", ["plain_lora", "hap"])
def test_a_lightning_training_step_makes_no_host_sync(method, data_root):
    """Guard, logging, progress bar, optimiser step (and HAP's batched MMD and routed gradient):
    nothing reads the device between log steps."""
    if not fused_adamw_available(torch.device("cpu")):
        pytest.skip("torch < 2.4 has no fused CPU AdamW: its foreach AdamW reads its step counters with .item() "
                    "(CPU tensors, so no device sync on a GPU, but this CPU count cannot tell them apart)")
    steps = lightning_syncs(method, data_root, steps=3, log_every=50)
    assert len(steps) == 3 and all(s["ops"] > 0 for s in steps)
    assert [s["names"] for s in steps] == [{}, {}, {}]


class _NaNAt(L.Callback):
    """Makes the loss of one step NaN (not the weights), and records weights and AdamW state around it."""

    def __init__(self, step: int) -> None:
        self.step, self.before, self.after = step, None, None

    @staticmethod
    def _state(trainer, module):
        optimizer = trainer.optimizers[0]
        params = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        state = {f"{i}.{k}": v.clone() for i, s in enumerate(optimizer.state.values()) for k, v in s.items()}
        return params, state

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.before = self._state(trainer, module)
            loss_fn = module.training_loss

            def nan_loss(*args):
                loss, logs = loss_fn(*args)
                module.training_loss = loss_fn
                return loss * float("nan"), logs

            module.training_loss = nan_loss

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1:
            self.after = self._state(trainer, module)


def test_a_non_finite_loss_skips_its_update_on_the_device_and_stops_within_n_steps(data_root, tmp_path):
    L.seed_everything(0, verbose=False)
    module = CLIPBaseline(CLIPSpec(model_name="dg-tiny-vit", templates=["a photo of the digit {}."]),
                          OptimSpec(lr=1e-3), mode="finetune")
    data = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32,
                               batch_size_per_domain=4, num_workers=0)
    probe = _NaNAt(step=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=10, log_every_n_steps=3, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_checkpointing=False, logger=False,
                        # (bar off: an in-process unit test of hooks, its output unread; every CLI test runs with it on)
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[probe],
                        default_root_dir=tmp_path)
    fused = fused_adamw_available(torch.device("cpu"))  # torch < 2.4: no fused CPU kernel, the fallback
    said = "no update with a non-finite loss reached" if fused else "the gradients of non-finite steps were zeroed"
    with pytest.raises(DGHeadsError, match=r"not finite \(nan\) at global step 1; stopped at global step 3 "
                                           r"\(checked every 3 steps.*" + said):
        trainer.fit(module, datamodule=data)
    if not fused:
        return  # the fallback's weights move by AdamW's momentum and decay: nothing bit-equal to check
    (params_before, state_before), (params_after, state_after) = probe.before, probe.after
    assert params_before.keys() == params_after.keys() and state_before.keys() == state_after.keys()
    assert all(torch.equal(params_before[k], params_after[k]) for k in params_before)  # weights untouched
    assert all(torch.equal(state_before[k], state_after[k]) for k in state_before)  # moments and step count too


def test_a_trained_logit_scale_is_clamped_to_clips_ceiling_after_each_step():
    """Retrieval fine-tuning trains CLIP's temperature: open_clip clamps it to ln(100) after every
    optimiser step (OpenAI's weights start at that ceiling, so any step up would pass it)."""
    module = CLIPBaseline(CLIPSpec(model_name="dg-tiny-vit", templates=["a photo of the digit {}."]), mode="finetune")
    scale = module.clip.logit_scale
    with torch.no_grad():
        scale.fill_(5.0)
    scale.requires_grad_(False)
    module.on_train_batch_end(None, None, 0)
    assert scale.item() == 5.0  # frozen (classification): left as it is
    scale.requires_grad_(True)
    module.on_train_batch_end(None, None, 0)
    assert scale.item() == pytest.approx(4.605170, abs=1e-6)  # ln(100)


@dataclass
class _ToyInner:
    depth: int = 2


@dataclass
class _ToySpec:  # a new method's own spec, with a spec inside it
    width: int = 3
    inner: _ToyInner = field(default_factory=_ToyInner)


class _ToyMethod(DGModule):  # defining the class is all a method does: nothing registered by hand
    def __init__(self, toy: _ToySpec | None = None, clip: CLIPSpec | None = None) -> None:
        super().__init__(clip=clip)


@pytest.mark.skipif(not hasattr(torch.serialization, "add_safe_globals"), reason="torch < 2.4 loads unrestricted")
def test_a_methods_spec_dataclasses_load_with_the_weights_only_loader_once_the_class_exists(tmp_path):
    """What `Method.load_from_checkpoint` of a model built in Python meets in a fresh process: its
    hparams hold the spec dataclasses, which torch's weights-only loader (the default) refuses
    unless allowed; importing the method's module allows them (`DGModule.__init_subclass__`)."""
    assert _ToyMethod.__name__
    torch.save({"hyper_parameters": {"toy": _ToySpec(inner=_ToyInner(depth=5))}}, tmp_path / "hp.ckpt")
    loaded = torch.load(tmp_path / "hp.ckpt", weights_only=True)
    assert loaded["hyper_parameters"]["toy"] == _ToySpec(width=3, inner=_ToyInner(depth=5))
