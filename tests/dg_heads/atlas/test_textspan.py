"""TextSpan's greedy basis on hand-made heads whose answer is worked out by hand, and its text pools."""

import torch
import torch.nn.functional as F

from dg_heads.atlas.textspan import GENERAL_POOL, class_prompts, read_pool, text_span


def test_text_span_picks_the_texts_that_span_a_head():
    """A head's outputs vary along texts 2 (most) and 0 (less): the basis starts with 2, then 0,
    and those two explain all of its variance."""
    torch.manual_seed(3)
    texts = F.normalize(torch.randn(6, 16), dim=-1)
    weights = torch.randn(50, 2) * torch.tensor([3.0, 1.0])
    contributions = (weights @ texts[[2, 0]])[None]  # [1 head, 50, 16]
    basis, shares = text_span(contributions, texts, 3)
    assert basis[0, :2].tolist() == [2, 0]
    assert abs(float(shares[0, :2].sum()) - 1.0) < 1e-4 and shares[0, 2] < 1e-6


def test_the_greedy_basis_projects_each_choice_out_before_the_next():
    """A head whose outputs are +-(3, 2, 1) (after centring away their common offset): total
    variance 2 * (9 + 4 + 1) = 28. Along the texts x = (1, 0, 0), xz = (0.6, 0, 0.8) and
    y = (0, 1, 0) it has 18, 2 * 2.6^2 = 13.52 and 8. The greedy basis takes x (18/28); with x
    projected out of the head and of the texts, xz is left pointing along z (2 of variance), so
    y (8/28) comes before it (2/28), although xz alone explains more than y."""
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.0, 0.8], [0.0, 1.0, 0.0]])
    offset = torch.tensor([5.0, -4.0, 7.0])
    contributions = torch.stack([offset + torch.tensor([3.0, 2.0, 1.0]), offset - torch.tensor([3.0, 2.0, 1.0])])
    basis, shares = text_span(contributions[None], texts, 3)
    assert basis.tolist() == [[0, 2, 1]]
    torch.testing.assert_close(shares, torch.tensor([[18 / 28, 8 / 28, 2 / 28]]))
    basis, shares = text_span(contributions[None], texts, 5)  # no more texts than the pool holds
    assert basis.shape == shares.shape == (1, 3)


def test_a_pool_file_keeps_its_order_without_comments_blanks_or_repeats(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("# my descriptions\n a red square \n\na blue circle\n  # indented comment\na red square\n")
    assert read_pool(pool) == ["a red square", "a blue circle"]
    assert class_prompts(["cat", "dog"], ["a photo of a {}.", "{}"]) == [
        "a photo of a cat.", "cat", "a photo of a dog.", "dog"]
    assert class_prompts(["cat", "cat"], ["{}"]) == ["cat"]


def test_the_shipped_pool_has_a_few_hundred_descriptions():
    texts = read_pool(GENERAL_POOL)
    assert 200 <= len(texts) <= 1000 and all(not t.startswith("#") for t in texts)
