"""Checkpoints a resumed run starts from (`dg_heads.resume`)."""

import errno
import os
import shutil

import torch

from tests.conftest import demo_configs


def test_a_checkpoint_killed_mid_save_leaves_the_previous_one_whole(data_root, tmp_path, monkeypatch):
    """The CLI's trainer saves a checkpoint, then is killed while saving the next one, with the
    temporary file on another file system than the run folder (a node's /tmp, a shared run
    folder: a rename fails with EXDEV and a move becomes a copy): the first checkpoint still loads."""
    from dg_heads.lightning_cli import DGHeadsCLI

    cli = DGHeadsCLI(args=[*demo_configs("finetune"), "--trainer.logger", "false"], run=False)
    checkpoint_io = cli.trainer.strategy.checkpoint_io
    path = tmp_path / "last.ckpt"
    checkpoint_io.save_checkpoint({"global_step": 1}, path)

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def killed_mid_copy(src, dst, *args, **kwargs):
        with open(src, "rb") as source, open(dst, "wb") as target:
            target.write(source.read()[: os.path.getsize(src) // 2])
        raise KeyboardInterrupt  # SIGKILL: the copy stops half-way

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(shutil, "copyfile", killed_mid_copy)
    try:
        checkpoint_io.save_checkpoint({"global_step": 2, "weights": torch.arange(1000.0)}, path)
    except KeyboardInterrupt:
        pass  # killed during the save
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=False)  # whole: the previous checkpoint or the new one
    assert loaded["global_step"] == 1 or torch.equal(loaded["weights"], torch.arange(1000.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left beside it
