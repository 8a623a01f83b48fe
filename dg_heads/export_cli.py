"""`dg-heads export CHECKPOINT --out FILE`: a run's checkpoint -> a plain open_clip weights file.

The checkpoint names its LightningModule class and holds the trained tensors; the frozen
backbone is rebuilt from the run's `clip` spec (and checked against the checkpoint's
fingerprint). LoRA is merged and gates / zero / scale ablations are folded, so the file loads
with `open_clip.create_model(model_name, pretrained=FILE)` and runs at native speed.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import torch

from dg_heads import heads
from dg_heads.backbone import MODEL_CONFIG_DIR, wants_quick_gelu
from dg_heads.errors import DGHeadsError


def load_module(checkpoint_path: Path):
    """The LightningModule a dg-heads checkpoint was saved from, with its trained tensors."""
    if not checkpoint_path.is_file():
        raise DGHeadsError(f"checkpoint {checkpoint_path} does not exist")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    class_path = checkpoint.get("dg_heads", {}).get("class_path")
    if class_path is None:
        raise DGHeadsError(f"{checkpoint_path} is not a dg-heads checkpoint (no 'dg_heads' entry)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    seed = checkpoint.get("dg_heads", {}).get("seed")
    if seed is not None:  # random-init backbones are rebuilt from the run's seed
        torch.manual_seed(seed)
    # trusted as above: a module built in Python keeps its spec dataclasses in the hparams, which
    # torch >= 2.6's default `weights_only=True` refuses (Lightning < 2.6 has no such argument)
    accepts = "weights_only" in inspect.signature(cls.load_from_checkpoint).parameters
    trusted = {"weights_only": False} if accepts else {}
    with warnings.catch_warnings():  # the frozen backbone is left out of checkpoints by design (rebuilt above)
        warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in the")
        return cls.load_from_checkpoint(checkpoint_path, map_location="cpu", **trusted)


def export(checkpoint: Path, *, out: Path) -> None:
    """A run's checkpoint to a plain open_clip weights file: LoRA merged, gates / zero / scale
    ablations folded, loadable with `open_clip.create_model(model_name, pretrained=FILE)`.

    Args:
        checkpoint: a dg-heads checkpoint (a run's .ckpt)
        out: weights file to write (.pt)
    """
    module = load_module(checkpoint)
    model = heads.convert(module.clip)
    path = heads.save_export(model, out)
    name = module.clip_spec.model_name
    quick = ", force_quick_gelu=True" if wants_quick_gelu(module.clip_spec) and not name.endswith("-quickgelu") else ""
    load = f"open_clip.create_model({name!r}, pretrained={str(path)!r}{quick})"
    own = MODEL_CONFIG_DIR / f"{name}.json"
    if own.is_file():  # a config shipped with dg-heads (the tiny CLIP): plain open_clip must be told of it
        load = f"open_clip.add_model_config({str(own)!r}); {load}"
    print(f"wrote {path}; load it with {load}")


def main(argv: list[str]) -> None:
    """`dg-heads export ARGS`."""
    from dg_heads.cli import run_tool

    run_tool(export, argv, "dg-heads export")
