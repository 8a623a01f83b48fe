"""TextSpan's greedy text basis of a head, and the text pools it chooses from.

TEXTSPAN (Gandelsman, Efros & Steinhardt, ICLR 2024, arXiv 2310.05916, Algorithm 1): given a
head's direct contributions C ([images, D], centred over the images) and a pool of text
embeddings R, repeat `basis_size` times: choose the text whose direction explains the most
variance of C, then project that direction out of C and out of every text of R. The chosen
texts, with the share of the head's variance each explains, describe the head in words.

Pools: `general_pool.txt` beside this file (ours: short image descriptions written for the
atlas in the style of TextSpan's ChatGPT-generated pool: colours, textures, shapes, styles,
places, objects, lighting), a file of the user's (one description a line), and the dataset's
class prompts (every template with every class name).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dg_heads.errors import DGHeadsError

GENERAL_POOL = Path(__file__).parent / "general_pool.txt"


def read_pool(path: str | Path) -> list[str]:
    """Non-empty, non-comment lines of a text pool file (duplicates dropped, order kept)."""
    path = Path(path)
    if not path.is_file():
        raise DGHeadsError(f"text pool file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DGHeadsError(f"text pool file {path} is not UTF-8 text: {error}") from None
    texts = list(dict.fromkeys(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")))
    if len(texts) < 2:
        raise DGHeadsError(f"text pool file {path} has {len(texts)} description(s); expected one per line, at least 2")
    return texts


def class_prompts(class_names: list[str], templates: list[str]) -> list[str]:
    return list(dict.fromkeys(t.format(c) for c in class_names for t in templates))


@torch.no_grad()
def encode_texts(clip, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """[texts, D] normalised text embeddings (float32, on the CPU)."""
    device = next(clip.parameters()).device
    out = [clip.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def text_span(contributions: torch.Tensor, texts: torch.Tensor, basis_size: int = 5
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """TEXTSPAN for K heads at once: contributions [K, N, D], texts [M, D] ->
    (chosen text indices [K, basis], share of each head's variance each explains [K, basis])."""
    c = contributions.double()
    c = c - c.mean(1, keepdim=True)
    total = c.pow(2).sum((1, 2)).clamp_min(1e-30)  # [K]
    r = texts.double().expand(c.shape[0], -1, -1).clone()  # [K, M, D]: projected per head
    chosen, shares = [], []
    available = torch.ones(r.shape[:2], dtype=torch.bool)
    for _ in range(min(basis_size, texts.shape[0])):
        unit = F.normalize(r, dim=-1)
        explained = (c @ unit.transpose(1, 2)).pow(2).sum(1)  # [K, M]: variance along each text
        explained = explained.masked_fill(~available | (r.norm(dim=-1) < 1e-8), -1.0)
        best = explained.argmax(-1)  # [K]
        direction = unit[torch.arange(len(best)), best]  # [K, D]
        shares.append(explained[torch.arange(len(best)), best].clamp_min(0) / total)
        chosen.append(best)
        available[torch.arange(len(best)), best] = False
        c = c - (c @ direction[:, :, None]) * direction[:, None, :]
        r = r - (r @ direction[:, :, None]) * direction[:, None, :]
    return torch.stack(chosen, 1), torch.stack(shares, 1).float()
