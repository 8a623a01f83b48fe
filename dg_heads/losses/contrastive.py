"""CLIP's symmetric contrastive loss (Radford et al. 2021): cross-entropy both ways on the
scaled cosine similarities of matched image-text pairs (pair i is image i with text i).

Under DDP every process's pairs are every process's negatives, as in open_clip's training: each
process ranks its own images against all the texts of the step, and its texts against all the
images (open_clip's `ClipLoss(local_loss=True, gather_with_grad=True)`), so 8 processes of 32 pairs
train as one batch of 256, not as 8 batches of 32."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor | float, gather: bool = True) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies of `logit_scale * images @ texts.T`
    (features L2-normalised by the caller; `logit_scale` already exponentiated, as CLIP's
    `logit_scale.exp()`).

    `gather` (under torch.distributed with more than one process): this process's pairs against
    every process's, the features gathered with their gradients (`torch.distributed.nn`'s
    all_gather sums each process's gradient back to the process that made the features; DDP's
    mean of the weights' gradients then equals the gradient of the one-batch loss). Every process
    must hold the same number of pairs (the training loaders drop the last, uneven batch)."""
    texts = text_features.to(image_features.dtype)
    rank, world = _world() if gather else (0, 1)
    all_images, all_texts = image_features, texts
    if world > 1:
        from torch.distributed.nn.functional import all_gather

        all_images, all_texts = torch.cat(all_gather(image_features)), torch.cat(all_gather(texts))
    targets = torch.arange(len(image_features), device=image_features.device) + rank * len(image_features)
    per_image = logit_scale * image_features @ all_texts.T
    per_text = logit_scale * texts @ all_images.T
    return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2
