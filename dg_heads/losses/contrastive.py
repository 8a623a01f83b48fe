"""CLIP's symmetric contrastive loss (Radford et al. 2021): cross-entropy both ways on the
scaled cosine similarities of matched image-text pairs (pair i is image i with text i)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies of `logit_scale * images @ texts.T`
    (features L2-normalised by the caller; `logit_scale` already exponentiated, as CLIP's
    `logit_scale.exp()`). Over this process's batch (each process's pairs against each other)."""
    logits = logit_scale * image_features @ text_features.to(image_features.dtype).T
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
