"""Testing on a domain the checkpoint trained on: the classic domain-generalisation mistake.

A checkpoint holds its DataModule's arguments (Lightning's `datamodule_hyper_parameters`): the
dataset and its test domains; every other domain of that dataset was a training (source)
domain. `lightning test` / `predict` with `--ckpt_path` on the same dataset with a test domain
among those sources warns in one line naming it (`--strict true`: an error, exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dg_heads.errors import DGHeadsError


def trained_domains(checkpoint_path: str | Path) -> tuple[str, list[str]] | None:
    """(dataset, the source domains it trained on) of a checkpoint, or None when it does not say."""
    from dg_heads.data.registry import get_dataset

    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint: Lightning reports it as it loads it
        return None
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    dataset, held_out = data.get("dataset"), data.get("test_domains")
    if not dataset or held_out is None:
        return None
    try:
        domains = get_dataset(str(dataset)).domains
    except DGHeadsError:  # a dataset of one's own: its domains are not known here
        return None
    held_out = {str(d) for d in held_out}
    return _registry_name(dataset), [d for d in domains if d not in held_out]


def _registry_name(dataset) -> str | None:
    """The registry's name of a dataset however it was written (`PACS`, `pacs`, its folder), else as given."""
    from dg_heads.data.registry import dataset_name

    if dataset is None:
        return None
    try:
        return dataset_name(str(dataset))
    except DGHeadsError:  # a dataset of one's own
        return str(dataset)


def check_test_domains(checkpoint_path, datamodule, strict: bool) -> None:
    """Warn (or, `strict`, raise) when `datamodule` tests on a domain the checkpoint trained on."""
    if not checkpoint_path or checkpoint_path in ("best", "last", "hpc") or not Path(checkpoint_path).is_file():
        return
    found = trained_domains(checkpoint_path)
    if found is None or _registry_name(getattr(datamodule, "hparams", {}).get("dataset")) != found[0]:
        return
    leaked = [str(d) for d in datamodule.hparams.get("test_domains", []) if str(d) in found[1]]
    if not leaked:
        return
    message = (f"data.init_args.test_domains {leaked}: the checkpoint {checkpoint_path} trained on "
               f"{'this domain' if len(leaked) == 1 else 'these domains'} (its source domains: {found[1]}); "
               f"its accuracy there is not domain generalisation")
    if strict:
        raise DGHeadsError(message)
    print(f"warning: {message} (--strict true makes this an error)", file=sys.stderr, flush=True)


def held_out_domains(checkpoint_path: str | Path) -> tuple[str, list[str]] | None:
    """(dataset, the domains it held out) of a checkpoint, or None when it does not say; unlike
    `trained_domains` it needs no registry entry (a dataset folder of one's own works too)."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint: its loader reports it
        return None
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    dataset, held_out = data.get("dataset"), data.get("test_domains")
    if not dataset or held_out is None:
        return None
    return str(dataset), [str(d) for d in held_out]
