"""Image-text retrieval: a training batch is `{"images": uint8 [B,3,H,W], "captions": [str]
(one per image), "image_index": [B]}`; an evaluation batch (one loader per evaluation dataset)
`{"images", "image_index": [B] (0..N-1 in that split), "captions": [[str]] (every caption of each
image)}`. The model embeds images (`DGModule.image_features`) and captions
(`DGModule.text_features`); training is CLIP's symmetric contrastive loss on the pairs
(`DGModule.retrieval_loss`).

Metrics (CLIP_benchmark's `zeroshot_retrieval` semantics, in percent): text->image recall@k
(`t2i_rk`): each caption is a query, a hit when its image is among the k images closest to it;
image->text recall@k (`i2t_rk`): each image is a query, a hit when ANY of its captions is among
the k captions closest to it; `rsum` is the sum of the six. k is capped at the number of
candidates. Exact under DDP: every process embeds its share of the images (and their captions)
once; the embeddings and their image indices are gathered (`RetrievalEmbeddings`, cat states
that allow uneven shares), ordered by index (a repeated image is counted once) and ranked
together, so any number of processes gives the figures of one."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric

from dg_heads.errors import DGHeadsError
from dg_heads.tasks import metrics as names
from dg_heads.tasks.base import Task


@torch.no_grad()
def retrieval_recalls(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor,
                      ks: tuple[int, ...] = names.RECALL_KS, chunk: int = 1024) -> dict[str, float]:
    """Recall@k both ways (percent) and RSUM of normalised embeddings: `image_emb` [N, D],
    `text_emb` [T, D], `text_image` [T] (the image of each caption, 0..N-1). Queries are ranked
    `chunk` at a time (MS-COCO's 25,000 captions x 5,000 images in pieces)."""
    image_emb, text_emb = image_emb.float(), text_emb.float()
    text_image = text_image.long().to(image_emb.device)
    n_images, n_texts = len(image_emb), len(text_emb)
    if n_images == 0 or n_texts == 0:
        raise DGHeadsError(f"retrieval needs images and captions; got {n_images} images, {n_texts} captions")
    t2i = {k: 0.0 for k in ks}
    for start in range(0, n_texts, chunk):  # text -> image: is the caption's image in its top k?
        scores = text_emb[start:start + chunk] @ image_emb.T
        top = scores.topk(min(max(ks), n_images), dim=1).indices
        hit = top == text_image[start:start + chunk, None]
        for k in ks:
            t2i[k] += float(hit[:, :k].any(dim=1).sum())
    i2t = {k: 0.0 for k in ks}
    image_ids = torch.arange(n_images, device=image_emb.device)
    for start in range(0, n_images, chunk):  # image -> text: is any of its captions in its top k?
        scores = image_emb[start:start + chunk] @ text_emb.T
        top = scores.topk(min(max(ks), n_texts), dim=1).indices
        hit = text_image[top] == image_ids[start:start + chunk, None]
        for k in ks:
            i2t[k] += float(hit[:, :k].any(dim=1).sum())
    out = {f"i2t_r{k}": 100.0 * i2t[k] / n_images for k in ks}
    out.update({f"t2i_r{k}": 100.0 * t2i[k] / n_texts for k in ks})
    out[names.RSUM] = sum(out[name] for name in names.RECALLS if name in out)
    return out


class RetrievalEmbeddings(Metric):
    """Image and caption embeddings of one evaluation split, with their indices, gathered over
    the processes at `compute` (cat states: uneven shares allowed) and returned in index order,
    each image (and each of its captions) once: `(image_emb [N, D], text_emb [T, D], text_image
    [T])`. `update(image_emb, image_index, text_emb, text_image, text_pos)`: `text_pos` is a
    caption's place among its image's captions (their order in the data)."""

    full_state_update = False

    def __init__(self, embed_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        for state in ("image_emb", "image_index", "text_emb", "text_image", "text_pos"):
            self.add_state(state, default=[], dist_reduce_fx="cat")

    def update(self, image_emb, image_index, text_emb, text_image, text_pos) -> None:
        self.image_emb.append(image_emb.detach().float())
        self.image_index.append(image_index.long())
        self.text_emb.append(text_emb.detach().float())
        self.text_image.append(text_image.long())
        self.text_pos.append(text_pos.long())

    def update_empty(self) -> None:
        """A process that read no batch of this split still takes part in the gathering, with
        nothing (shaped [0, D], so every process's states have the same dimensions)."""
        empty = torch.empty(0, self.embed_dim, device=self.device)
        none = torch.empty(0, dtype=torch.long, device=self.device)
        self.update(empty, none, empty, none, none)

    def compute(self):
        def cat(state):
            return torch.cat(state) if isinstance(state, list) else state

        return ordered(cat(self.image_emb), cat(self.image_index), cat(self.text_emb), cat(self.text_image),
                       cat(self.text_pos))


def ordered(image_emb, image_index, text_emb, text_image, text_pos):
    """Gathered embeddings in index order, each image and caption once (a process's repeated
    image counts once): `(image_emb [N, D], text_emb [T, D], text_image [T])`, `text_image` the
    row of each caption's image in `image_emb` (a caption whose image is missing is dropped)."""
    order = torch.argsort(image_index, stable=True)
    image_index, image_emb = image_index[order], image_emb[order]
    first = torch.ones_like(image_index, dtype=torch.bool)
    first[1:] = image_index[1:] != image_index[:-1]
    image_index, image_emb = image_index[first], image_emb[first]
    text_key = text_image * (int(text_pos.max()) + 1 if len(text_pos) else 1) + text_pos
    order = torch.argsort(text_key, stable=True)
    text_key, text_emb, text_image = text_key[order], text_emb[order], text_image[order]
    first = torch.ones_like(text_key, dtype=torch.bool)
    first[1:] = text_key[1:] != text_key[:-1]
    text_emb, text_image = text_emb[first], text_image[first]
    row = torch.searchsorted(image_index, text_image).clamp(max=max(len(image_index) - 1, 0))
    known = image_index[row] == text_image if len(image_index) else torch.zeros_like(text_image, dtype=torch.bool)
    return image_emb, text_emb[known], row[known]


def caption_layout(image_index: torch.Tensor, captions: list[list[str]]):
    """An evaluation batch's captions flattened: `(texts, text_image, text_pos)`, each caption's
    image index and its place among that image's captions."""
    flat = [caption for image_captions in captions for caption in image_captions]
    per_image = torch.tensor([len(c) for c in captions], device=image_index.device)
    text_image = image_index.repeat_interleave(per_image)
    starts = torch.cumsum(per_image, 0) - per_image
    text_pos = torch.arange(len(flat), device=image_index.device) - starts.repeat_interleave(per_image)
    return flat, text_image, text_pos


def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` of every process concatenated (uneven first dimensions allowed); itself with one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
            or torch.distributed.get_world_size() == 1:
        return tensor
    from torchmetrics.utilities.distributed import gather_all_tensors

    return torch.cat(gather_all_tensors(tensor.contiguous()))


class RetrievalTask(Task):
    name = "retrieval"

    def setup(self, module, datamodule, stage: str) -> None:
        embed_dim = module.embed_dim()
        for split in names.STAGES:
            datasets = list(datamodule.eval_domains(split))
            module.eval_domains[split] = datasets
            module.metrics[split] = nn.ModuleList(RetrievalEmbeddings(embed_dim) for _ in datasets)
            module.counts[split] = nn.ModuleList()

    def training_step(self, module, batch):
        images, captions = batch["images"], batch["captions"]
        loss, logs = module.retrieval_loss(images, list(captions))
        return loss, logs, len(captions)

    def eval_step(self, module, split: str, batch, dataloader_idx: int) -> None:
        images, image_index, captions = batch["images"], batch["image_index"], batch["captions"]
        if not len(image_index):
            return
        flat, text_image, text_pos = caption_layout(image_index, captions)
        module.metrics[split][dataloader_idx].update(
            module.image_features(images), image_index, module.text_features(flat), text_image, text_pos)

    def epoch_end(self, module, split: str) -> None:
        datasets = module.eval_domains[split]
        results: dict[str, dict[str, float]] = {}
        for dataset, metric in zip(datasets, module.metrics[split]):
            if metric.update_count == 0:
                metric.update_empty()
            image_emb, text_emb, text_image = metric.compute()
            metric.reset()
            if len(image_emb) == 0:
                results[dataset] = {names.COUNT: 0.0}
                continue
            results[dataset] = {**retrieval_recalls(image_emb, text_emb, text_image),
                                names.COUNT: float(len(image_emb))}
        device = module.device
        for dataset, values in results.items():
            module.log(names.key(split, names.COUNT, dataset), torch.tensor(values[names.COUNT], device=device),
                       sync_dist=True)  # the same on every process already; sync_dist silences DDP's warning
        scored = [values for values in results.values() if names.RSUM in values]
        for name in names.RETRIEVAL_METRICS:
            if not scored:
                break
            if len(datasets) > 1:
                for dataset, values in results.items():
                    if name in values:
                        module.log(names.key(split, name, dataset), torch.tensor(values[name], device=device),
                                   sync_dist=True)
            mean = sum(values[name] for values in scored) / len(scored)
            module.log(names.key(split, name), torch.tensor(mean, device=device),
                       prog_bar=split == "val" and name == names.RSUM, sync_dist=True)

    def report(self, **kwargs):
        from dg_heads.callbacks.retrieval_report import RetrievalReport

        return RetrievalReport(**kwargs)
