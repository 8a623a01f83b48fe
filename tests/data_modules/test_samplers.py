"""The training stream: DomainBed's infinite per-domain stream, seen in epoch windows and sharded over ranks."""


def _stream(sampler, epochs):
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


def test_train_stream_continues_across_epochs_and_shards_over_ranks():
    from torch.utils.data import DistributedSampler

    from data_modules.samplers import DomainStreamSampler

    n, batch, steps = 10, 4, 3  # 12 samples per epoch of a 10-image domain: the stream wraps mid-epoch
    one = DomainStreamSampler(n, seed=7, batch_size=batch, steps_per_epoch=steps)
    stream = _stream(one, 5)
    assert len(stream) == 5 * steps * batch
    passes = [stream[i:i + n] for i in range(0, len(stream) - n + 1, n)]
    assert all(sorted(p) == list(range(n)) for p in passes)  # every pass a permutation: no restart, no repeat
    assert passes[0] != passes[1]
    assert _stream(DomainStreamSampler(n, 7, batch, steps), 5) == stream  # seeded
    one.set_epoch(3)
    assert list(one) == stream[3 * steps * batch: 4 * steps * batch]  # an epoch is a pure function of (seed, epoch)
    # two ranks: batch g of the one-process stream goes to rank g % 2
    ranks = [DomainStreamSampler(n, 7, batch, steps, rank=r, world_size=2) for r in range(2)]
    assert isinstance(ranks[0], DistributedSampler)  # so Lightning does not wrap (and re-shard) it
    full = _stream(DomainStreamSampler(n, 7, batch, 2 * steps), 2)
    batches = [full[i:i + batch] for i in range(0, len(full), batch)]
    for r, sampler in enumerate(ranks):
        mine = _stream(sampler, 2)
        assert [mine[i:i + batch] for i in range(0, len(mine), batch)] == batches[r::2]
