"""CLIP's contrastive loss under DDP (2 gloo processes): every process's pairs are negatives, as in
open_clip's training; checked against open_clip's own `ClipLoss(local_loss=True, gather_with_grad=True)`
and against the one-process loss of the whole batch."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from open_clip.loss import ClipLoss

from dg_heads.losses.contrastive import contrastive_loss

PAIRS, DIM, WORLD = 8, 16, 2


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(PAIRS, DIM, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.5 * torch.randn(PAIRS, DIM, generator=generator), dim=-1)
    return images, texts


def _rank(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    images, texts = _features()
    share = slice(rank * PAIRS // WORLD, (rank + 1) * PAIRS // WORLD)
    found = {}
    for name, loss_of in (("ours", lambda i, t: contrastive_loss(i, t, 10.0)),
                          ("open_clip", ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=WORLD))):
        local_images = images[share].clone().requires_grad_()
        local_texts = texts[share].clone().requires_grad_()
        loss = loss_of(local_images, local_texts) if name == "ours" else loss_of(local_images, local_texts, 10.0)
        loss.backward()
        found[name] = (loss.detach(), local_images.grad, local_texts.grad)
    torch.save(found, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes, each importing torch and open_clip
def test_two_processes_rank_against_every_processs_pairs_as_open_clip_does(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    images, texts = _features()
    images.requires_grad_(), texts.requires_grad_()
    whole = ClipLoss()(images, texts, 10.0)  # one process, the whole batch: the loss DDP should train on
    whole.backward()
    for rank, found in enumerate(ranks):
        for ours, theirs in zip(found["ours"], found["open_clip"]):
            assert torch.allclose(ours, theirs, atol=1e-6)
        share = slice(rank * PAIRS // WORLD, (rank + 1) * PAIRS // WORLD)
        # a process's gradient sums every process's loss; DDP's mean over the 2 then equals the whole batch's
        assert torch.allclose(found["ours"][1], WORLD * images.grad[share], atol=1e-6)
        assert torch.allclose(found["ours"][2], WORLD * texts.grad[share], atol=1e-6)
    assert sum(found["ours"][0] for found in ranks) / WORLD == pytest.approx(whole.item(), abs=1e-6)
