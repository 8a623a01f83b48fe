"""dg_heads.compat: the private framework internals dg-heads uses, each checked against the
installed Lightning/torch by what it must do (a release that changes one fails here)."""

import pytest
import torch

from dg_heads import compat
from dg_heads.optim import OptimSpec, adamw, fused_adamw_available
from dg_heads.resume import next_requeue_checkpoint


@pytest.mark.skipif(not fused_adamw_available(torch.device("cpu")), reason="torch < 2.4: no fused CPU AdamW")
@pytest.mark.parametrize("bad", [True, False])
def test_a_flagged_step_is_skipped_on_the_device(bad):
    """Fused AdamW given the flag leaves weights, moments and step count as they were (flag true)
    or steps as an unflagged AdamW does (flag false)."""
    spec = OptimSpec(lr=0.1, weight_decay=0.1)
    weight, reference = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    fused, plain = adamw([{"params": [weight]}], spec), torch.optim.AdamW([reference], lr=0.1, weight_decay=0.1)
    for w, o in ((weight, fused), (reference, plain)):  # one ordinary step each: moments exist
        w.grad = torch.full((3,), 0.5)
        o.step()
    weight.grad, reference.grad = torch.full((3,), 2.0), torch.full((3,), 2.0)
    before = {k: v.clone() for k, v in fused.state[weight].items()}, weight.detach().clone()
    assert compat.skips_step_on_device(fused) and not compat.skips_step_on_device(plain)
    assert compat.skip_step_on_device(fused, torch.tensor(bad))
    assert not compat.skip_step_on_device(plain, torch.tensor(bad))
    fused.step()
    if bad:
        torch.testing.assert_close(weight.detach(), before[1], rtol=0, atol=0)
        for key, value in before[0].items():
            torch.testing.assert_close(fused.state[weight][key], value, rtol=0, atol=0)
    else:
        plain.step()
        torch.testing.assert_close(weight.detach(), reference.detach())


def test_the_next_requeue_checkpoint_is_numbered_after_the_highest(tmp_path):
    assert next_requeue_checkpoint(tmp_path / "new") == tmp_path / "new/hpc_ckpt_1.ckpt"
    for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt", "last.ckpt", "best-step=30.ckpt", "hpc_ckpt_x.ckpt"):
        (tmp_path / name).write_bytes(b"")
    assert next_requeue_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_11.ckpt"


def test_the_attached_trainer_is_none_outside_a_trainer_and_the_trainer_inside():
    from lightning.pytorch import LightningModule, Trainer

    from dg_heads.compat import attached_trainer

    module = LightningModule()
    assert attached_trainer(module) is None  # where `module.trainer` would raise
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)  # no run: no bar needed
    trainer.strategy.connect(module)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
