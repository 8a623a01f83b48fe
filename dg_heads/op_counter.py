"""How many aten ops and host syncs a piece of PyTorch work makes: `OpCounter`, and
`lightning_syncs` for the training steps of a real `Trainer.fit`.

On a GPU a training step of many small ops is launch-bound, and every host sync stalls the
launch queue; both are counted here exactly, independent of the machine's speed. Used by the
benchmark `experiments/bench_step_ops.py` and by the tests that keep a method's training step
free of host syncs (tests/dg_heads/methods/test_base.py); in the package because both import it
(a script in experiments/ runs with the installed package importable, not tests/).

Counting (`TorchDispatchMode`, `dg_heads.compat.dispatch_mode_base`): every aten op that
reaches the dispatcher except views (ops whose schema returns an alias of an input: `view`,
`slice`, `detach`, `t`, `expand`, ...). Host syncs: ops after which the host must wait for the
device's data, named in `SYNC_OPS` / `is_sync`:
- `aten._local_scalar_dense` (`.item()`, `bool(t)`, `float(t)`, `if t:`), `aten.equal`;
- ops whose output shape depends on the data: `nonzero`, `masked_select`, `_unique`, `_unique2`,
  `unique_dim`, `unique_consecutive`, `bincount`, `repeat_interleave.Tensor` without
  `output_size`, and indexing with a boolean mask (`index.Tensor`, `index_put(_)` with a
  bool/uint8 index: it runs `nonzero` inside);
- device-to-host copies (`_to_copy` / `copy_` from a non-CPU tensor to the CPU; `.tolist()`,
  `.cpu()`): only on an accelerator, as on the CPU `.tolist()` dispatches no op at all.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import torch

from dg_heads import compat

aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense, aten.equal, aten.nonzero, aten.masked_select, aten._unique, aten._unique2,
            aten.unique_dim, aten.unique_consecutive, aten.unique_dim_consecutive, aten.bincount}
MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def _is_bool_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def is_sync(func, args, kwargs) -> bool:
    """Whether `func(*args, **kwargs)` makes the host wait for the device (see the module docstring)."""
    packet = func.overloadpacket
    if packet in SYNC_OPS:
        return True
    if packet in MASK_INDEXING and len(args) > 1 and any(_is_bool_mask(i) for i in (args[1] or ())):
        return True
    if func is aten.repeat_interleave.Tensor:  # the tensor-repeats overloads all come down to this one
        return kwargs.get("output_size") is None
    if packet is aten._to_copy:
        source, target = args[0], kwargs.get("device")
        return (isinstance(source, torch.Tensor) and source.device.type != "cpu"
                and target is not None and torch.device(target).type == "cpu")
    if packet is aten.copy_:
        return all(isinstance(t, torch.Tensor) for t in args[:2]) and args[0].device.type == "cpu" \
            and args[1].device.type != "cpu"
    return False


class OpCounter(compat.dispatch_mode_base()):
    """Counts non-view aten ops (in all and by name) and host syncs (by name) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops, self.names, self.syncs, self.tagged_syncs = 0, Counter(), Counter(), Counter()
        self.tag = ""  # a label for where the current syncs come from

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not func.is_view:
            self.ops += 1
            self.names[func.overloadpacket.__name__] += 1
        if is_sync(func, args, kwargs):
            name = str(func.overloadpacket.__name__) + ("[bool mask]" if func.overloadpacket in MASK_INDEXING else "")
            self.syncs[name] += 1
            self.tagged_syncs[self.tag] += 1
        return func(*args, **kwargs)


def lightning_syncs(method: str, data_root: Path, steps: int = 5, log_every: int = 4) -> list[dict]:
    """Per training step of a real `Trainer.fit`: ops, syncs inside `training_loss`, syncs elsewhere."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger

    from dg_heads.backbone import CLIPSpec
    from dg_heads.data import DomainBedDataModule
    from dg_heads.methods import CLIPBaseline, GatingSpec, HeadPurification, LoRASpec
    from dg_heads.optim import OptimSpec

    spec, optim = CLIPSpec(model_name="dg-tiny-vit", templates=["a photo of the digit {}."]), OptimSpec(lr=1e-4)
    L.seed_everything(0, verbose=False)
    if method == "hap":
        module = HeadPurification(spec, optim, LoRASpec(), GatingSpec())
    elif method == "plain_lora":
        module = HeadPurification(spec, optim, LoRASpec(head_aware=False), GatingSpec(enabled=False, mmd_weight=0.0))
    else:
        module = CLIPBaseline(spec, optim, mode="finetune")
    counter, per_step = OpCounter(), []

    def tagged(fn, tag: str):
        """`fn` with the counter's syncs attributed to `tag` while it runs."""
        def wrapper(*args, **kwargs):
            counter.tag = tag
            try:
                return fn(*args, **kwargs)
            finally:
                counter.tag = "framework"
        return wrapper

    module.training_loss = tagged(module.training_loss, "loss")
    module.backward = tagged(module.backward, "backward")  # the loss's backward (e.g. boolean-mask index_put)

    class Window(Callback):
        """The mode is on from one `on_train_batch_start` to the next (or the end of training)."""

        def _close(self, trainer) -> None:
            if counter.tag:
                counter.__exit__(None, None, None)
                per_step.append({"step": len(per_step), "ops": counter.ops, "loss_syncs": counter.tagged_syncs["loss"],
                                 "backward_syncs": counter.tagged_syncs["backward"],
                                 "framework_syncs": counter.tagged_syncs["framework"], "names": dict(counter.syncs)})
                counter.tag = ""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._close(trainer)
            counter.ops, counter.names, counter.syncs, counter.tagged_syncs = 0, Counter(), Counter(), Counter()
            counter.tag = "framework"
            counter.__enter__()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._close(trainer)

        on_train_end = on_train_epoch_end

    with tempfile.TemporaryDirectory() as tmp:
        data = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32,
                                   batch_size_per_domain=8, num_workers=1, train_augment="domainbed")
        trainer = L.Trainer(accelerator="auto", devices=1, max_steps=steps, limit_val_batches=0,
                            num_sanity_val_steps=0, log_every_n_steps=log_every, enable_checkpointing=False,
                            logger=TensorBoardLogger(tmp, name="ops"), callbacks=[Window()], enable_progress_bar=True,
                            enable_model_summary=False)
        trainer.fit(module, datamodule=data)
    return per_step

