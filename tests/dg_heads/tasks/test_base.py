"""`Task`: a subclass is found by its name, with nothing to register by hand (the README's steps for a
third task); its selection metric comes from `metrics.SELECTION`; the base leaves every step to it."""

import pytest

from dg_heads.errors import DGHeadsError
from dg_heads.tasks import Task, metrics, task_named, task_of


def test_a_new_task_subclass_is_found_by_its_name():
    class ToyTask(Task):  # what a third task's file defines
        name = "toy_ranking"

    assert isinstance(task_named("toy_ranking"), ToyTask)
    assert type(task_of(type("ToyData", (), {"task": "toy_ranking"}))) is ToyTask
    assert task_named("retrieval").monitor == "val/rsum"  # the shipped ones, from their own files
    assert task_named("classification").monitor == "val/acc"
    assert type(task_of(object())).__name__ == "ClassificationTask"  # no `task`: classification


def test_an_unknown_task_is_one_line_naming_the_known_ones():
    with pytest.raises(DGHeadsError, match=r"'nope' is not one of .*'classification'.*'retrieval'"):
        task_named("nope")


def test_a_task_selects_by_its_metric_and_leaves_every_step_to_its_subclass(monkeypatch):
    class ToySelection(Task):
        name = "toy_selection"

    monkeypatch.setitem(metrics.SELECTION, "toy_selection", ("val/loss", "min"))
    task = ToySelection()
    assert (task.monitor, task.mode) == ("val/loss", "min")
    for step, args in (("setup", (None, None, "fit")), ("training_step", (None, None)),
                       ("eval_step", (None, "val", None, 0)), ("epoch_end", (None, "val")), ("report", ())):
        with pytest.raises(NotImplementedError):
            getattr(task, step)(*args)
