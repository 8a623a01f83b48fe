"""The op counter (dg_heads.op_counter; experiments/bench_step_ops.py uses it) sees every kind of host
sync (the training-step tests rely on it)."""

import torch

from dg_heads.op_counter import OpCounter, is_sync


def test_sync_counter_sees_item_bool_masks_and_unique():
    x = torch.tensor([1.0, 2.0, 2.0, 3.0])
    with OpCounter() as counter:
        x.sum().item()
        bool((x > 0).all())
        x[x > 1] = 0.0
        x[x > 1]
        torch.unique(x)
        torch.arange(3).repeat_interleave(torch.tensor([1, 2, 3]))
        x.view(2, 2), x[1:], x.detach()  # views: not ops
        x * 2
    assert dict(counter.syncs) == {"_local_scalar_dense": 2, "index_put_[bool mask]": 1, "index[bool mask]": 1,
                                   "_unique2": 1, "repeat_interleave": 1}
    assert not is_sync(torch.ops.aten.mul.Tensor, (x, x), {})
