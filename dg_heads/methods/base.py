"""What every dg-heads method shares: a CLIP backbone and a task (`dg_heads.tasks`), chosen by
the data (its DataModule's `task`): what a batch holds, how the model scores it, what is logged.

Methods differ only in what they train and in their loss; subclasses override
`configure_trainable` and `training_loss` (classification: images, labels, domains) and, where
it differs from the base's CLIP contrastive loss, `retrieval_loss` (images, captions); a method
that cannot serve a task refuses it in `check_task`. The seam: `setup` builds the task's scoring
and metric states, and the training step, evaluation steps and epoch ends hand the batch to it.
Logged metrics (the model-selection contract; the names in `dg_heads.tasks.metrics`):
classification `val/acc/<domain>` for each source domain's `out` split, `val/acc` (their mean,
DomainBed's training-domain validation), `test/acc/<domain>` and `test/acc` for the held-out
domains; retrieval `val/i2t_r1` ... `val/rsum` (which selects checkpoints) and `test/...`.
The run's files (tables, `metrics_*.json`, `splits.json`, `predictions.csv`, a method's own)
come from `default_callbacks` (`dg_heads.callbacks`), which `configure_callbacks` hands to
whatever Trainer runs the model: the CLI's or a plain one in Python.

Images: uint8 input (what the DataModule's loaders give) is normalised here, on the model's
device, with CLIP's mean/std (`prepare_images`); float input is taken as already normalised.

A training step makes no host sync (no `.item()`, no all-reduce): the non-finite-loss guard
keeps an on-device record of the first non-finite loss, skips that step's update on the device
(AdamW runs fused and gets the step's flag as its `found_inf`: parameters, moments and step
count stay exactly as they were), and reads the record (all-gathered under DDP) every
`trainer.log_every_n_steps` training steps, before every checkpoint is written, at each epoch's
start (the previous epoch's end: see `on_train_epoch_start`) and at the end of training. The run
then stops with `error: the training loss is not finite (...) at global step N ...` naming the
last good checkpoint: within `log_every_n_steps` steps of the bad one, and with no update
computed from a non-finite loss in the weights.
"""

from __future__ import annotations

import hashlib
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from dg_heads import compat
from dg_heads.backbone import (
    DEFAULT_TEMPLATES,
    CLIPSpec,
    build_text_classifier,
    create_clip,
    image_size_of,
    resolve_templates,
)
from dg_heads.callbacks import PredictionsWriter, RequeueOnSignal, SplitsManifest
from dg_heads.data.transforms import CLIP_MEAN, CLIP_STD, normalize_uint8
from dg_heads.errors import DGHeadsError, keyed
from dg_heads.losses.contrastive import contrastive_loss
from dg_heads.optim import OptimSpec, build_optimizer
from dg_heads.resume import latest_checkpoint_file
from dg_heads.tasks import Task, task_named, task_of
from dg_heads.tasks.metrics import STAGES  # noqa: F401  (re-exported: the evaluation stages)

LOGIT_SCALE_MAX = math.log(100)  # CLIP's temperature ceiling (open_clip's training clamps to it)


class DGModule(L.LightningModule):
    """Base LightningModule: CLIP image features scored against class-prompt text embeddings
    (classification) or caption embeddings (retrieval), as the data's task says."""

    def __init_subclass__(cls, **kwargs) -> None:
        """A method's spec dataclasses (its `__init__`'s annotations) may be rebuilt by torch's
        weights-only loader as soon as the class is imported: `Method.load_from_checkpoint(path)` of
        a model built in Python, in a fresh process, needs nothing registered by hand."""
        super().__init_subclass__(**kwargs)
        allow_spec_types(*spec_types_of(cls.__init__))

    def __init__(self, clip: CLIPSpec | None = None, optim: OptimSpec | None = None) -> None:
        super().__init__()
        self.clip_spec = clip or CLIPSpec()
        self.optim_spec = optim or OptimSpec()
        self.save_hyperparameters(logger=False)
        allow_loading(self.hparams)
        with keyed("clip"):
            self.clip, self.tokenizer = create_clip(self.clip_spec)
        # the prompts: the spec's, else (null) the data's at setup, else DEFAULT_TEMPLATES
        self.templates = resolve_templates(self.clip_spec.templates) if self.clip_spec.templates else None
        self.classifier: nn.Parameter | None = None  # [classes, embed_dim], built from prompts in setup
        self.metrics = nn.ModuleDict()
        self.counts = nn.ModuleDict()  # images scored per domain: shows skipped or double-counted ones
        self.eval_domains: dict[str, list[str]] = {}  # evaluation domains (classification) or datasets (retrieval)
        self.task: Task | None = None  # the data's task (`dg_heads.tasks`), set in setup
        # uint8 images are normalised on the device with these (not saved: constants)
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)
        self._guard: dict[str, torch.Tensor] | None = None  # the non-finite-loss record, on the device
        self._guarded_steps = 0

    @classmethod
    def run_name(cls, init_args) -> str:
        """The run folder's name under `runs/<dataset>/` (the CLI's `{method}`), from the parsed init_args."""
        return cls.__name__.lower()

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise DGHeadsError("dg-heads methods need a DG DataModule (config key `data`)")
        expected = image_size_of(self.clip)
        if getattr(datamodule, "image_size", expected) != expected:
            raise DGHeadsError(
                f"data.image_size is {datamodule.image_size} but {self.clip_spec.model_name} expects "
                f"{expected}: set data.init_args.image_size: {expected}"
            )
        self.task = task_of(datamodule)
        self.check_task(self.task.name, stage)
        if self.templates is None and self.task.name == "classification":
            with keyed("data.init_args.templates"):
                self.templates = resolve_templates(getattr(datamodule, "templates", None) or DEFAULT_TEMPLATES)
        self.task.setup(self, datamodule, stage)
        self.configure_trainable()

    def check_task(self, task: str, stage: str) -> None:
        """Refuse, with one `error:` line, a task this method cannot serve; every task by default."""

    def embed_dim(self) -> int:
        """The dimension of the joint image-text embedding."""
        return int(self.clip.text_projection.shape[-1]) if getattr(self.clip, "text_projection", None) is not None \
            else int(self.clip.visual.output_dim)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Normalised embeddings of `texts` (captions) by the text tower, on the model's device.
        Tokenised on the host; on CUDA the tokens go over from pinned memory without a blocking copy
        (a training step makes no host sync)."""
        device = self.pixel_mean.device
        tokens = self.tokenizer(list(texts))
        tokens = tokens.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tokens.to(device)
        return F.normalize(self.clip.encode_text(tokens), dim=-1)

    @torch.no_grad()
    def text_classifier(self, class_names: list[str]) -> torch.Tensor:
        """Normalised mean text embedding of each class over the prompt templates ([classes,
        embed_dim] fp32, on the CPU with the rest of the model in `setup`).

        Computed where the weights will run, in batches (`backbone.build_text_classifier`): under
        a trainer on the strategy's root device (`cuda:N` on a GPU node: DomainNet's 27,600
        prompts take seconds there, tens of minutes on a CPU core), the text tower put there for
        the build and its CPU tensors restored after; without one where the weights are. Never on
        `self.device` as such: in `setup` Lightning reports the strategy's device while the
        weights are still on the CPU."""
        device = self.trainer.strategy.root_device if compat.attached_trainer(self) is not None else None
        return build_text_classifier(self.clip, self.tokenizer, class_names, self.templates, device=device)

    def configure_trainable(self) -> None:
        """Set `requires_grad` on what the method trains; the base trains nothing."""
        self.clip.requires_grad_(False)

    # ----------------------------------------------------------- checkpoints
    # A checkpoint holds what training changed (trainable tensors and the classifier) plus
    # optimiser and loop state, never the frozen backbone: that is rebuilt from `clip` (tag,
    # file or seeded random init) and checked against a fingerprint stored in the checkpoint.
    strict_loading = False

    def frozen_fingerprint(self) -> str:
        """A hash of a strided sample of every frozen parameter: cheap, and any swap shows."""
        digest = hashlib.sha1()
        for name, p in self.named_parameters():
            if not p.requires_grad and name != "classifier":
                sample = p.detach().flatten()[:: max(1, p.numel() // 256)].float().cpu()
                digest.update(name.encode() + sample.numpy().tobytes())
        return digest.hexdigest()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite()  # never write a checkpoint after a non-finite loss
        keep = {n for n, p in self.named_parameters() if p.requires_grad} | {"classifier"}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything, before the model was built
        checkpoint["dg_heads"] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "frozen_fingerprint": self.frozen_fingerprint(),
            "seed": int(seed) if seed is not None else None,
            "task": self.task.name if self.task is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        weights = checkpoint.get("state_dict", {}).get("classifier")
        if weights is not None and self.classifier is None:  # loaded before setup (export, load_from_checkpoint)
            self.classifier = nn.Parameter(torch.zeros_like(weights), requires_grad=False)
        stored_task = checkpoint.get("dg_heads", {}).get("task")
        if self.task is None and stored_task is not None:  # loaded before setup: the task it trained on
            self.task = task_named(stored_task)
        if self.classifier is not None or stored_task not in (None, "classification"):
            self.configure_trainable()  # the fingerprint must see the same frozen set as at saving
        stored = checkpoint.get("dg_heads", {}).get("frozen_fingerprint")
        if stored is not None and stored != self.frozen_fingerprint():
            raise DGHeadsError(
                "the checkpoint was trained on other frozen backbone weights than this run builds "
                f"({self.clip_spec.model_name}, pretrained={self.clip_spec.pretrained!r}); use the "
                "run's own config (same clip spec and seed_everything)"
            )

    # --------------------------------------------------------------- forward
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `[B, 3, H, W]` -> CLIP-normalised float, on the images' device; float passes as is."""
        if images.dtype != torch.uint8:
            return images
        return normalize_uint8(images, self.pixel_mean.float(), self.pixel_std.float()).to(self.pixel_mean.dtype)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(self.prepare_images(images)), dim=-1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        classifier = F.normalize(self.classifier, dim=-1)
        return self.clip.logit_scale.exp() * features @ classifier.to(features.dtype).T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.image_features(images))

    # -------------------------------------------------------------- training
    @staticmethod
    def merge_domains(batch: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        """Concatenate a `{domain: (images, labels)}` batch; also return each sample's domain index."""
        images = torch.cat([x for x, _ in batch.values()])
        labels = torch.cat([y for _, y in batch.values()])
        domains = torch.cat([torch.full_like(y, i) for i, (_, y) in enumerate(batch.values())])
        return images, labels, domains

    def training_loss(self, images, labels, domains) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss and what to log beside it; the base is CLIP-logit cross-entropy."""
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"train/ce": loss, "train/acc": acc}

    def retrieval_loss(self, images, captions: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss on image-caption pairs (retrieval) and what to log beside it; the
        base is CLIP's symmetric contrastive loss (`dg_heads.losses.contrastive`)."""
        loss = contrastive_loss(self.image_features(images), self.text_features(captions),
                                self.clip.logit_scale.exp())
        return loss, {"train/contrastive": loss}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[0], dict):
            batch = batch[0]  # CombinedLoader outside the trainer yields (batch, idx, loader_idx)
        task = self.task or task_of(getattr(compat.attached_trainer(self), "datamodule", None))
        loss, logs, batch_size = task.training_step(self, batch)
        self._watch_loss(loss)
        # No per-step progress-bar value: the bar would call `.item()` on it every step. The bar
        # shows the previous epoch's mean loss; `train/loss` goes to the logger every N steps.
        self.log("train/loss", loss)
        self.log("train/loss_epoch", loss.detach(), on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)  # reduced once, at the epoch's end
        self.log_dict(logs)
        return loss

    # ------------------------------------------------------ non-finite guard
    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Record (on the device, no sync) whether this step's loss is finite, and the first one that is not."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        if compat.attached_trainer(self) is None:  # called by hand: nothing to skip or defer
            if bool(bad):
                raise DGHeadsError(f"the training loss is not finite ({loss.item()})")
            return
        if self._guard is None:
            self._guard = {"first_step": torch.full((), -1.0, dtype=torch.float64, device=loss.device),
                           "first_value": torch.zeros((), dtype=torch.float64, device=loss.device),
                           "step_bad": torch.zeros((), dtype=torch.bool, device=loss.device)}
        g = self._guard
        new = bad & (g["first_step"] < 0)
        g["first_step"] = torch.where(new, torch.full((), float(self.global_step), dtype=torch.float64,
                                                      device=loss.device), g["first_step"])
        g["first_value"] = torch.where(new, loss.double(), g["first_value"])
        g["step_bad"] = g["step_bad"] | bad  # any bad loss among the batches of this optimiser step
        self._guarded_steps += 1

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip the update of a step with a non-finite loss, on the device: fused AdamW gets the
        flag as `found_inf` (its kernel then leaves parameters, moments and step count alone);
        another optimiser gets that step's gradients zeroed (no NaN reaches it, but its own
        momentum and weight decay still move the weights)."""
        if self._guard is None:
            return
        flag, self._guard["step_bad"] = self._guard["step_bad"], torch.zeros_like(self._guard["step_bad"])
        optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper: the torch optimiser
        if compat.skip_step_on_device(optimizer, flag):
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = torch.where(flag, torch.zeros_like(p.grad), p.grad)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        scale = self.clip.logit_scale
        if scale.requires_grad:  # trained (retrieval fine-tune): open_clip's clamp after every step
            with torch.no_grad():
                scale.clamp_(0, LOGIT_SCALE_MAX)
        if self._guarded_steps and self._guarded_steps % max(1, self.trainer.log_every_n_steps) == 0:
            self._check_finite()

    def on_train_epoch_start(self) -> None:
        """The previous epoch's end check, made here: no collective may run in the epoch-end hooks.
        There Lightning reduces the `sync_dist` epoch metrics lazily, at their first read: on rank 0
        the progress bar (off on the other ranks) reads them first, in its `on_train_epoch_end`,
        before this module's hook, the other ranks only later (ModelCheckpoint, the logger). A
        collective between the two (this check's all-gather) met a different collective on each
        rank: every DDP run with the default progress bar hung at its first epoch end."""
        if self.current_epoch > 0:
            self._check_finite()

    def on_fit_end(self) -> None:  # (on_fit_end: methods override on_train_end)
        self._check_finite()

    def _check_finite(self) -> None:
        """Read the record (one sync, all-gathered over the processes) and stop if a loss was not
        finite: every rank reads the same record, so all stop together."""
        if self._guard is None:
            return
        packed = torch.stack([self._guard["first_step"], self._guard["first_value"]])
        if self.trainer.world_size > 1:
            packed = self.trainer.strategy.all_gather(packed)
        bad = [(step, value) for step, value in packed.reshape(-1, 2).tolist() if step >= 0]
        if not bad:
            return
        step, value = min(bad)
        optimizers = [getattr(o, "optimizer", o) for o in self.trainer.optimizers]
        skipped = ("no update with a non-finite loss reached the weights" if optimizers and all(
            compat.skips_step_on_device(o) for o in optimizers) else "the gradients of non-finite steps were zeroed")
        every = max(1, self.trainer.log_every_n_steps)
        raise DGHeadsError(
            f"the training loss is not finite ({value}) at global step {int(step)}; stopped at global step "
            f"{self.global_step} (checked every {every} steps: trainer.log_every_n_steps), {skipped}. "
            f"{self._last_checkpoint_note()}"
        )

    def _last_checkpoint_note(self) -> str:
        newest = latest_checkpoint_file(self.trainer)
        if newest is None:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint is {newest.resolve()} (untouched)."

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable_parameters()
        if not params:
            raise DGHeadsError(f"{type(self).__name__} has nothing to train; use `validate` or `test`")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return build_optimizer(self.optim_spec, [g for g in groups if g["params"]],
                               int(self.trainer.estimated_stepping_batches))

    # ------------------------------------------------------------ evaluation
    def _eval_step(self, split: str, batch, dataloader_idx: int) -> None:
        self.task.eval_step(self, split, batch, dataloader_idx)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Predicted class, class probabilities and label of each image, and its table row when the
        DG DataModule's predict loaders give one (`callbacks.PredictionsWriter` writes the file).
        Classification only."""
        if self.task is not None and self.task.name != "classification":
            raise DGHeadsError(f"`predict` writes class predictions; the data's task is {self.task.name!r}: "
                               "use `lightning test` for its metrics")
        images, labels, *rows = batch
        probs = self(images).softmax(-1) if len(labels) else torch.empty(0, 0)
        out = {"pred": probs.argmax(-1) if len(labels) else labels, "prob": probs, "label": labels}
        if rows:
            out["row"] = rows[0]
        return out

    def on_validation_epoch_end(self) -> None:
        self.task.epoch_end(self, "val")

    def on_test_epoch_end(self) -> None:
        self.task.epoch_end(self, "test")

    # ------------------------------------------------------------ run files
    def default_callbacks(self) -> list[Callback]:
        """The callbacks that write this method's run files (`dg_heads.callbacks`); a method with
        files of its own returns them beside `super().default_callbacks()`."""
        datamodule = getattr(compat.attached_trainer(self), "datamodule", None)
        return [SplitsManifest(), task_of(datamodule).report(), PredictionsWriter(), RequeueOnSignal()]

    def configure_callbacks(self) -> list[Callback]:
        """Lightning's hook: `default_callbacks` join whatever Trainer runs the model (the CLI's
        or a plain `Trainer`), so both leave the same files (the report: the data's task's). A
        trainer callback of a default's type (configured by a user) is kept and that default left
        out; Lightning would otherwise replace the user's with the default. Left out too on a
        second `fit`/`test` with the same trainer: the first one's are still there (and
        `DomainReport` remembers the validation)."""
        present = list(self.trainer.callbacks) if compat.attached_trainer(self) is not None else []
        return [c for c in self.default_callbacks() if not any(isinstance(p, type(c)) for p in present)]

    # ---------------------------------------------------------- hparams tab
    def hparams_for_logging(self) -> dict[str, Any]:
        """Flat hyper-parameters for TensorBoard's HParams tab: the method, then every spec of the
        model flattened with `/` (`clip/model_name`, `lora/head_aware`, `gating/mmd_weight`,
        `search/strategy`, `search/ga/population`), then the data's (`data/test_domains`).
        jsonargparse's bookkeeping (`_class_path`, `_instantiator`) is left out.

        The method's key is `Method` and its value the run folder's name (`run_name`: `hap`,
        `lora`, `finetune`, `zero_shot`, `aat_ga`, ...), not the class (HAP and plain LoRA are both
        `HeadPurification`): TensorBoard orders the tab's columns by name (those that differ between
        runs first), and a capital sorts before every lower-case key."""
        # the spec in effect (`<key>_spec`: a default where the argument was None), else the argument
        specs = {key: getattr(self, f"{key}_spec", value) for key, value in self.hparams.items()}
        params: dict[str, Any] = {"Method": type(self).run_name(specs)}
        flatten_hparams(specs, "", params)
        datamodule = getattr(compat.attached_trainer(self), "datamodule", None)
        if datamodule is not None:
            flatten_hparams(dict(datamodule.hparams), "data", params)
        return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}


def allow_loading(value: Any) -> None:
    """Let torch's weights-only checkpoint loader (the default) rebuild the spec dataclasses that
    a model built in Python keeps in its hparams (`clip=CLIPSpec(...)`): without it,
    `trainer.test(model, ckpt_path="best")` or a resume refuses that run's own checkpoint. (The
    CLI's hparams are plain dicts.)"""
    found: set[type] = set()

    def visit(item: Any) -> None:
        if is_dataclass(item) and not isinstance(item, type):
            found.add(type(item))
            for f in fields(item):
                visit(getattr(item, f.name))
        elif isinstance(item, Mapping):
            for sub in item.values():
                visit(sub)
        elif isinstance(item, (list, tuple)):
            for sub in item:
                visit(sub)

    visit(value)
    allow_spec_types(*sorted(found, key=lambda t: t.__qualname__))


def spec_types_of(function) -> list[type]:
    """The dataclasses a function's annotations name, and those their fields name, recursively
    (`SearchSpec | None` -> SearchSpec, and the `GASpec` of its `ga` field). An annotation that
    cannot be resolved yet (a name defined after the class) is skipped: `allow_loading` still
    registers what a model holds when it is built."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: nothing found here
        return []
    found: dict[type, None] = {}

    def visit(hint) -> None:
        if isinstance(hint, type) and is_dataclass(hint):
            if hint not in found:
                found[hint] = None
                for sub in spec_types_of(hint.__init__):
                    found.setdefault(sub, None)
            return
        for arg in typing.get_args(hint):
            visit(arg)

    for name, hint in hints.items():
        if name != "return":
            visit(hint)
    return list(found)


def allow_spec_types(*types: type) -> None:
    """Add spec dataclasses to the weights-only loader's allowed globals (torch >= 2.4 has that
    list; older torch loads checkpoints unrestricted)."""
    if types and hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(list(types))


def flatten_hparams(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Dataclasses and mappings flattened into `prefix/key/...` entries, recursively; keys that
    start with `_` (jsonargparse's `_class_path`, `_instantiator`) are dropped."""
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    elif hasattr(value, "as_dict") and callable(value.as_dict):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not str(key).startswith("_"):
                flatten_hparams(item, f"{prefix}/{key}" if prefix else str(key), out)
    elif prefix:
        out[prefix] = value
    return out
