"""`dg_heads.errors`: whatever layers wrap a user's mistake (a DataLoader worker, jsonargparse, a
LightningModule's `__init__`), the CLI prints the one line that names it; a bug stays a bug."""

from collections import deque

import pytest
import torch

from dg_heads import errors
from dg_heads.errors import ConfigError, DGHeadsError, keyed, one_line, parser_error, user_error_in, user_message


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise DGHeadsError("image /data/PACS/sketch/dog/000.png is unreadable")


def test_a_mistake_in_a_dataloader_worker_is_its_own_line():
    """PyTorch re-raises a worker's error in the main process with the worker's traceback in the
    message; the line is the original message, without the traceback or the type's dotted name."""
    loader = torch.utils.data.DataLoader(_Unreadable(), num_workers=1)
    with pytest.raises(DGHeadsError) as raised:
        next(iter(loader))
    assert "Original Traceback" in str(raised.value)  # what the worker's re-raise looks like
    assert one_line(raised.value) == "image /data/PACS/sketch/dog/000.png is unreadable"
    assert user_message(raised.value) == "image /data/PACS/sketch/dog/000.png is unreadable"


def test_one_line_joins_a_message_of_several_lines():
    assert one_line(ValueError("first\nsecond\n")) == "first second"


def test_keyed_prefixes_the_keys_outermost_first_and_lets_other_errors_pass():
    with pytest.raises(DGHeadsError) as raised:
        with keyed("model.init_args.gating"):
            with keyed("blocks"):
                raise DGHeadsError("block 7 does not exist")
    assert str(raised.value) == "model.init_args.gating.blocks: block 7 does not exist"
    assert (raised.value.key, raised.value.detail) == ("model.init_args.gating.blocks", "block 7 does not exist")
    with pytest.raises(KeyError):  # a bug is not given a key
        with keyed("model"):
            raise KeyError("bug")


class _Group(Exception):
    """An exception group's shape (`ExceptionGroup` is Python 3.11+; this package supports 3.10)."""

    def __init__(self, message, exceptions):
        super().__init__(message)
        self.exceptions = exceptions


def _chained(inner: BaseException, how: str) -> BaseException:
    """`inner` wrapped as jsonargparse / Lightning wrap it: `raise ... from`, raised while handling, or
    held by an exception group (not raised while handling it: no context); two layers deep."""
    try:
        if how == "group":
            raise _Group("two ranks failed", [KeyError("other"), inner])
        try:
            raise inner
        except BaseException as caught:
            if how == "cause":
                raise ValueError("Does not validate against any of the Union subtypes") from caught
            raise RuntimeError("while building the model")  # noqa: B904 - the implicit chain is the case
    except BaseException as middle:
        try:
            raise RuntimeError("outer layer") from middle
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize("how", ["cause", "context", "group"])
def test_the_mistake_behind_any_chain_is_found(how, monkeypatch):
    mistake = DGHeadsError("lr must be positive", key="optim.lr")
    monkeypatch.setattr(errors, "_RECENT", deque())  # found by the chain, not by its text (the last resort)
    outer = _chained(mistake, how)
    assert user_error_in(outer) is mistake
    assert user_message(outer) == "optim.lr: lr must be positive"  # raised outside any LightningModule


@pytest.mark.parametrize("how", ["cause", "context", "group"])
def test_a_bug_behind_any_chain_is_not_a_user_mistake(how):
    outer = _chained(KeyError("a bug"), how)
    assert user_error_in(outer) is None and user_message(outer) is None


def test_a_chain_that_loops_ends():
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert user_error_in(first) is None


def test_a_mistake_kept_only_as_text_is_found_by_its_text():
    """Some jsonargparse versions keep only the text of what a class's `__init__` raised."""
    mistake = DGHeadsError("unknown dataset 'pacz'")
    wrapper = ValueError(f"Problem with given class_path 'dg_heads.data.DomainBedDataModule':\n  {mistake}")
    assert user_error_in(wrapper) is mistake
    assert user_error_in(ValueError("Problem with given class_path: nothing of ours")) is None


def test_a_mistake_inside_a_lightning_module_or_datamodule_names_its_config_section():
    """Raised while jsonargparse builds `model` / `data`: the line says which, by the key when the
    mistake has one (`model.init_args.<key>`), else by the class."""
    from lightning.pytorch import LightningDataModule, LightningModule

    class ToyMethod(LightningModule):
        def __init__(self, key):
            super().__init__()
            raise DGHeadsError("ranks [2, 2] has 2 entries; expected one per block", key=key)

    class ToyData(LightningDataModule):
        def __init__(self):
            super().__init__()
            raise DGHeadsError("unknown dataset 'pacz'")

    def built(cls, *args):
        try:
            try:
                cls(*args)
            except DGHeadsError as mistake:
                raise ValueError("Does not validate against any of the Union subtypes") from mistake
        except ValueError as wrapped:
            return wrapped

    assert user_message(built(ToyMethod, "lora")) == (
        "model.init_args.lora: ranks [2, 2] has 2 entries; expected one per block")
    assert user_message(built(ToyMethod, None)) == (
        "model (ToyMethod): ranks [2, 2] has 2 entries; expected one per block")
    assert user_message(built(ToyData)) == "data (ToyData): unknown dataset 'pacz'"


def test_a_config_error_is_its_line():
    assert user_message(ConfigError("trainer.max_epochs: expected an int\ngot 'abc'")) == (
        "trainer.max_epochs: expected an int got 'abc'")


# jsonargparse's explanation of a Union/class_path that did not match (its shape; wording varies by version)
NESTED = """usage: dg-heads [-h] [-c CONFIG] [--print_config[=flags]] {fit,validate,test,predict} ...
error: Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>]
  Errors:
    - Problem with given class_path 'dg_heads.methods.CLIPBaseline':
        Parser key "optim":
          Option 'lrr' is not accepted
  Given value type: <class 'jsonargparse._namespace.Namespace'>
  Given value: Namespace(class_path='dg_heads.methods.CLIPBaseline', init_args=Namespace(mode='finetune'))
"""
PLAIN = """usage: dg-heads [-h] ...
error: Parser key "trainer.max_epochs":
  Expected a <class 'int'>
  Given value type: <class 'str'>
  Given value: abc
"""


@pytest.mark.parametrize("stderr, line", [
    (NESTED, "model.optim: Option 'lrr' is not accepted"),  # the keys joined; a class's whole config left out
    (PLAIN, "trainer.max_epochs: Expected a <class 'int'>; got 'abc'"),  # a plain value is quoted
    ("usage: x\nerror: Unrecognized arguments: --nope 1\n", "Unrecognized arguments: --nope 1"),
    ("one\n\ntwo\nthree\nfour\n", "two three four"),  # no `error:` line: the last three lines
])
def test_a_parser_error_is_one_line_naming_the_key(stderr, line):
    assert parser_error(stderr) == line
