"""The training stream: DomainBed's infinite per-domain stream, seen in epoch windows and sharded over ranks."""


def _stream(sampler, epochs):
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


def test_train_stream_continues_across_epochs_and_shards_over_ranks():
    from torch.utils.data import DistributedSampler

    from dg_heads.data.samplers import DomainStreamSampler

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


def test_augmentation_depends_on_the_image_place_in_the_stream_only(data_root):
    """The same batches, random augmentation included, whatever the worker count and wherever an
    iteration starts: what a run resumed mid-epoch needs. The global random state is left alone."""
    import torch

    from dg_heads.data import DomainBedDataModule

    def batches(workers, resume_at=None):
        dm = DomainBedDataModule("rotated_digits", ["0", "15", "75"], image_size=32, batch_size_per_domain=4,
                                 num_workers=workers, train_augment="domainbed")
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(2)
        if resume_at is not None:
            loader.load_state_dict({**loader.state_dict(), "step": resume_at})
        out = []
        for i, batch in enumerate(loader):
            out.append(batch)
            if i == 3:
                assert loader.state_dict()["step"] == (resume_at or 2 * dm.steps_per_epoch) + 4
                return out

    torch.manual_seed(0)
    before = torch.get_rng_state()
    alone = batches(0)
    assert torch.equal(torch.get_rng_state(), before)
    two = batches(2)
    steps = 1437 // 4
    later = batches(0, resume_at=2 * steps + 2)
    for mine, theirs, resumed in zip(alone, two, [None, None, *later]):
        assert list(mine) == ["30", "45", "60"]
        for d in mine:
            assert torch.equal(mine[d][0], theirs[d][0]) and torch.equal(mine[d][1], theirs[d][1])
            if resumed is not None:
                assert torch.equal(mine[d][0], resumed[d][0])
    assert not torch.equal(alone[0]["30"][0], alone[1]["30"][0])
