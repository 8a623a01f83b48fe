"""Data-loading processes are bounded by what the job asked for, whatever the number of domains,
and the one training loader gives each step exactly the images of DomainBed's per-domain streams."""

import json
import multiprocessing
import types

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import demo_configs, run_cli


class CountWorkers(Callback):
    """The most worker processes this rank had alive while training and while evaluating, to `path`."""

    def __init__(self, path: str) -> None:
        self.path, self.most = path, {"train": 0, "validate": 0, "test": 0}

    def _count(self, stage: str) -> None:
        self.most[stage] = max(self.most[stage], len(multiprocessing.active_children()))
        with open(self.path, "w") as file:
            json.dump(self.most, file)

    def on_train_batch_start(self, trainer, *args) -> None:
        self._count("train")

    def on_validation_batch_start(self, trainer, *args) -> None:
        self._count("validate")

    def on_test_batch_start(self, trainer, *args) -> None:
        self._count("test")


@pytest.mark.slow
def test_a_rank_runs_num_workers_for_training_and_as_many_for_the_loader_it_evaluates(data_root, tmp_path):
    # 5 source domains, 2 workers: one loader per domain would run 10 (training) + 10 (validation)
    counts = tmp_path / "workers.json"
    result = run_cli("fit", *demo_configs("finetune"), "--trainer.max_steps", "6", "--trainer.max_epochs", "-1",
                     "--trainer.val_check_interval", "3", "--trainer.check_val_every_n_epoch", "null",
                     "--trainer.limit_test_batches", "2", "--data.init_args.num_workers", "2",
                     "--data.init_args.batch_size_per_domain", "8",
                     "--test_after_fit", "true",
                     f"--trainer.callbacks+={__name__}.CountWorkers", f"--trainer.callbacks.path={counts}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    most = json.loads(counts.read_text())
    # 2 for training (persistent) + at most 2 for the one evaluation loader being read (or read last:
    # the sanity check stops a loader before its end, and its workers end when the next is read)
    assert 0 < most["validate"] <= 4 and most["train"] <= 4 and 0 < most["test"] <= 4, most


def test_num_workers_defaults_to_the_jobs_cpus_less_one(monkeypatch, data_root):
    from dg_heads.data import DomainBedDataModule
    from dg_heads.errors import DGHeadsError

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert DomainBedDataModule("rotated_digits", ["75"]).num_workers == 5
    # 2 DDP processes on this node without SLURM share the 6 CPUs: 3 each, less one
    dm = DomainBedDataModule("rotated_digits", ["75"])
    dm.trainer = types.SimpleNamespace(num_devices=2)
    assert dm.num_workers == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")  # `--cpus-per-task 3`: a rank has 3 CPUs, whatever the node has
    assert DomainBedDataModule("rotated_digits", ["75"]).num_workers == 2
    assert dm.num_workers == 2  # `--cpus-per-task` is each process's own: not divided
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert DomainBedDataModule("rotated_digits", ["75"]).num_workers == 0
    assert DomainBedDataModule("rotated_digits", ["75"], num_workers=4).num_workers == 4
    with pytest.raises(DGHeadsError, match=r"num_workers must be a whole number >= 0 or null.*got -1"):
        DomainBedDataModule("rotated_digits", ["75"], num_workers=-1)


def test_one_training_loader_gives_every_domain_its_stream_batch(data_root):
    """Each step's batch of a domain is what a loader of that domain alone over its stream gives
    (today's per-domain loaders), under DDP too (each rank every other batch of every stream)."""
    from torch.utils.data import DataLoader

    from dg_heads.data import DomainBedDataModule
    from dg_heads.data.samplers import DomainStreamSampler

    dm = DomainBedDataModule("rotated_digits", ["75"], image_size=32, batch_size_per_domain=16, num_workers=0,
                             train_augment="none", trial_seed=1)
    dm.setup("fit")
    for rank, world in ((0, 1), (1, 2)):
        dm._world = lambda: (rank, world)  # noqa: B023
        loader = dm.train_dataloader()
        steps = dm.steps_per_epoch
        assert len(loader) == steps == 1437 // (16 * world)
        alone = {d: DataLoader(s, batch_size=16, sampler=DomainStreamSampler(len(s), 100 + i, 16, steps, rank, world))
                 for i, (d, s) in enumerate(dm.train_sets.items())}
        for epoch in (0, 3):
            loader.sampler.set_epoch(epoch)
            for per_domain in alone.values():
                per_domain.sampler.set_epoch(epoch)
            ours = list(loader)
            theirs = [dict(zip(alone, batches)) for batches in zip(*alone.values())]
            assert len(ours) == len(theirs) == steps
            for mine, reference in zip(ours, theirs):
                assert list(mine) == list(reference) == dm.source_domains
                for d in mine:
                    assert torch.equal(mine[d][0], reference[d][0]) and torch.equal(mine[d][1], reference[d][1])
