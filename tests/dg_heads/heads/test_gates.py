"""`HeadGate`: learnable gates are H * softmax(theta) (identity at init), fixed ones hold their values."""

import math

import pytest
import torch

from dg_heads.heads import HeadGate


def test_learnable_gates_start_at_one_and_are_heads_times_softmax():
    gate = HeadGate(3)
    assert torch.equal(gate.values(), torch.ones(3))  # theta = 0: the model is unchanged
    assert [name for name, _ in gate.named_parameters()] == ["theta"]
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([0.0, math.log(2.0), math.log(3.0)]))
    # softmax of (0, ln 2, ln 3) is (1, 2, 3) / 6; times H = 3
    torch.testing.assert_close(gate.values(), torch.tensor([0.5, 1.0, 1.5]))
    other = torch.tensor([math.log(3.0), 0.0, 0.0])  # a checkpoint's logits: (3, 1, 1) / 5 * 3
    torch.testing.assert_close(gate.values(other), torch.tensor([1.8, 0.6, 0.6]))
    torch.testing.assert_close(gate.values(), torch.tensor([0.5, 1.0, 1.5]))  # its own theta untouched


def test_fixed_gates_hold_their_values_and_train_nothing():
    values = torch.tensor([0.0, 2.0, 0.5, 1.0])
    gate = HeadGate(4, learnable=False, values=values)
    values[0] = 9.0  # the gate keeps its own copy
    assert torch.equal(gate.values(), torch.tensor([0.0, 2.0, 0.5, 1.0]))
    assert not list(gate.parameters()) and "fixed" in gate.state_dict()
    assert torch.equal(HeadGate(2, learnable=False).values(), torch.ones(2))
    with pytest.raises(ValueError, match=r"gate values need shape \(4,\), got \(3,\)"):
        HeadGate(4, learnable=False, values=torch.ones(3))
