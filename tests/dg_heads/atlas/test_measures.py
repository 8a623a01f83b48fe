"""The atlas's measures on hand-made samples whose answer is known without the code under test."""

import math

import torch
import torch.nn.functional as F

from dg_heads.atlas import measures as M
from dg_heads.heads import HeadMask


def _sample(contributions, labels, domains):
    n = len(labels)
    embedding = contributions.sum((1, 2))
    return M.Sample(contributions, embedding, torch.as_tensor(labels), torch.as_tensor(domains), torch.arange(n))


def test_head_accuracy_and_mean_ablation_find_the_one_head_that_carries_the_class():
    """Head (1, 0) writes the class's text direction (plus a constant); the others write a
    constant. Only that head classifies alone, and only mean-ablating it costs accuracy."""
    torch.manual_seed(0)
    text = F.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.arange(12) % 3
    domains = torch.arange(12) // 6
    c = torch.zeros(12, 2, 2, 8)
    c[:, :, :] = torch.randn(8) * 0.01
    c[:, 1, 0] = 5 * text[labels]
    sample = _sample(c, labels, domains)
    alone = M.head_accuracy(sample, text, 2)
    assert alone[1, 0] == 1.0 and M.base_accuracy(sample, text, 2) == 1.0
    lost = M.mean_ablation(sample, text, 2)
    assert lost[1, 0] > 0.5 and lost.flatten()[[0, 1, 3]].abs().max() == 0


def test_domain_accuracy_is_the_mean_of_the_per_domain_accuracies():
    correct = torch.tensor([True, True, True, False, False, True])  # domain 0: 3/4, domain 1: 1/2
    domains = torch.tensor([0, 0, 0, 0, 1, 1])
    assert abs(float(M.domain_accuracy(correct, domains, 3)) - 0.625) < 1e-6  # domain 2 absent: left out


def test_domain_mmd_is_hap_estimator_by_hand():
    """DomainBed's estimator written out with loops: mean k(x, x') + mean k(y, y') - 2 mean k(x, y)."""
    torch.manual_seed(1)
    x = torch.randn(7, 1, 1, 5)
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    gammas = (0.1, 1.0)

    def k(a, b):
        return sum(math.exp(-g * float((a - b).pow(2).sum())) for g in gammas)

    a, b = x[:3, 0, 0], x[3:, 0, 0]
    mean = lambda p, q: sum(k(u, v) for u in p for v in q) / (len(p) * len(q))  # noqa: E731
    expected = mean(a, a) + mean(b, b) - 2 * mean(a, b)
    got = M.domain_mmd(_sample(x, torch.zeros(7, dtype=torch.long), domains), 2, gammas)
    assert abs(float(got[0, 0]) - expected) < 1e-5
    one_domain = M.domain_mmd(_sample(x, torch.zeros(7, dtype=torch.long), torch.zeros(7, dtype=torch.long)), 1)
    assert math.isnan(float(one_domain[0, 0]))


def test_domain_probe_separates_a_domain_coded_head_and_not_a_noise_head():
    torch.manual_seed(2)
    n = 80
    domains = torch.arange(n) % 2
    c = torch.randn(n, 1, 2, 6)
    c[:, 0, 0, 0] += 4 * (domains.float() * 2 - 1)  # head 0 codes the domain; head 1 is noise
    accuracy = M.domain_probe(_sample(c, torch.zeros(n, dtype=torch.long), domains), 2)
    assert accuracy[0, 0] > 0.95 and accuracy[0, 1] < 0.75


def test_spearman_and_suppression():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert abs(M.spearman(a, torch.tensor([10.0, 20.0, 30.0, 40.0])) - 1) < 1e-9
    assert abs(M.spearman(a, torch.tensor([4.0, 3.0, 2.0, 1.0])) + 1) < 1e-9
    name, values = M.suppression({"gate": torch.tensor([[1.5, 0.5]])})
    assert name == "1 - gate" and values.tolist() == [[-0.5, 0.5]]
    assert M.suppression({"aat_mask": HeadMask().to_tensor((1, 2))}) is None
