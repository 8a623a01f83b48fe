"""Every metric name a task logs, from one place: `key`'s layout, the recall names, and a selection
metric (with its mode) for every task."""

from dg_heads.tasks import Task, metrics, task_named


def test_keys_put_a_domain_after_accuracy_and_count_and_a_dataset_before_a_recall():
    assert metrics.key("val", "acc") == "val/acc"
    assert metrics.key("val", "acc", "sketch") == "val/acc/sketch"
    assert metrics.key("test", "n", "75") == "test/n/75"
    assert metrics.key("test", "rsum") == "test/rsum"
    assert metrics.key("test", "i2t_r1", "flickr30k") == "test/flickr30k/i2t_r1"


def test_the_retrieval_names_and_every_tasks_selection():
    assert metrics.RECALLS == ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
    assert metrics.RETRIEVAL_METRICS == (*metrics.RECALLS, "rsum")
    assert metrics.SELECTION == {"classification": ("val/acc", "max"), "retrieval": ("val/rsum", "max")}
    task_named("classification")  # imports every task file
    shipped = {name for name, cls in Task.registry.items() if cls.__module__.startswith("dg_heads.")}
    assert shipped == set(metrics.SELECTION)  # a task without a selection metric could not select checkpoints
