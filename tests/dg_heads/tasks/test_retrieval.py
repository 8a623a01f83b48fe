"""The retrieval metric (CLIP_benchmark's semantics, in percent) and its gathering (any order, a
repeated image once)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dg_heads.tasks.retrieval import RetrievalEmbeddings, caption_layout, ordered, retrieval_recalls


def _tiny_case():
    """3 images, 5 captions in 2-D (unit vectors): image 0 = (1, 0), image 1 = (0, 1), image 2 = (-1, 0);
    captions 0, 1 of image 0, caption 2 of image 1, captions 3, 4 of image 2."""
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    texts = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.2]]), dim=-1)
    return images, texts, torch.tensor([0, 0, 1, 2, 2])


def test_recalls_of_a_hand_computed_case():
    """By hand (cosines): text -> image, each caption's nearest images: c0 -> i0 (hit at 1), c1 -> i1, i0
    (hit at 2), c2 -> i1 (hit at 1), c3 -> i0, i1, i2 (hit at 3), c4 -> i2 (hit at 1): R@1 3/5, R@2 4/5.
    Image -> text, each image's nearest captions: i0 -> c3 (image 2's), c0 (its own): miss at 1, hit at 2;
    i1 -> c2 (hit at 1); i2 -> c4 (hit at 1): R@1 2/3, R@2 3/3. k beyond the candidates: every one."""
    images, texts, text_image = _tiny_case()
    got = retrieval_recalls(images, texts, text_image, ks=(1, 2, 5, 10))
    assert got["t2i_r1"] == pytest.approx(60.0)
    assert got["t2i_r2"] == pytest.approx(80.0)
    assert got["t2i_r5"] == got["t2i_r10"] == pytest.approx(100.0)  # 3 images: all of them
    assert got["i2t_r1"] == pytest.approx(200 / 3)
    assert got["i2t_r2"] == got["i2t_r5"] == got["i2t_r10"] == pytest.approx(100.0)
    default = retrieval_recalls(images, texts, text_image)
    assert default["rsum"] == pytest.approx(200 / 3 + 100 + 100 + 60 + 100 + 100)
    assert set(default) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}


def test_gathered_embeddings_are_ordered_and_each_image_counted_once():
    """Shares in any order (as processes deliver them), an image repeated (a padding sampler): the
    figures of the data in order, each image once."""
    images, texts, text_image = _tiny_case()
    expected = retrieval_recalls(images, texts, text_image)
    metric = RetrievalEmbeddings(embed_dim=2)
    # "process 1": image 2 with its captions (in reverse order); "process 0": images 1, 0; image 0 again
    metric.update(images[[2]], torch.tensor([2]), texts[[4, 3]], torch.tensor([2, 2]), torch.tensor([1, 0]))
    metric.update(images[[1, 0]], torch.tensor([1, 0]), texts[[2, 0, 1]], torch.tensor([1, 0, 0]),
                  torch.tensor([0, 0, 1]))
    metric.update(images[[0]], torch.tensor([0]), texts[[0, 1]], torch.tensor([0, 0]), torch.tensor([0, 1]))
    image_emb, text_emb, rows = metric.compute()
    assert torch.equal(image_emb, images) and torch.equal(text_emb, texts) and torch.equal(rows, text_image)
    assert retrieval_recalls(image_emb, text_emb, rows) == expected


def test_an_eval_batchs_captions_flattened_with_their_image_and_place():
    texts, text_image, text_pos = caption_layout(torch.tensor([7, 3]), [["a", "b", "c"], ["d", "e"]])
    assert texts == ["a", "b", "c", "d", "e"]
    assert text_image.tolist() == [7, 7, 7, 3, 3] and text_pos.tolist() == [0, 1, 2, 0, 1]


def test_a_caption_whose_image_is_missing_is_dropped():
    """Images 4 and 9 gathered (9 twice); captions of 9, 5 (an image no process scored), 4: rows 1, 0."""
    image_emb = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    text_emb = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    images, texts, rows = ordered(image_emb, torch.tensor([9, 4, 9]), text_emb, torch.tensor([9, 5, 4]),
                                  torch.tensor([0, 0, 0]))
    assert torch.equal(images, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(texts, torch.tensor([[3.0, 3.0], [1.0, 1.0]])) and rows.tolist() == [0, 1]
