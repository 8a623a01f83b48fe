"""`DGHeadsError`: a `ValueError` whose text leads with the config key it concerns, keeping the message
and key apart, remembered among the last eight raised; `dg_heads.errors` re-exports the same class."""

from __future__ import annotations

from dg_heads.data import errors


def test_the_key_leads_the_message_and_both_are_kept():
    error = errors.DGHeadsError("expected one of ['a', 'b'], got 'c'", "data.init_args.dataset")
    assert isinstance(error, ValueError)
    assert str(error) == "data.init_args.dataset: expected one of ['a', 'b'], got 'c'"
    assert (error.detail, error.key) == ("expected one of ['a', 'b'], got 'c'", "data.init_args.dataset")
    plain = errors.DGHeadsError("no key")
    assert (str(plain), plain.key) == ("no key", None)


def test_the_last_eight_are_remembered_and_one_class_serves_both_packages():
    made = [errors.DGHeadsError(f"mistake {i}") for i in range(10)]
    assert list(errors.RECENT) == made[2:]
    from dg_heads.errors import DGHeadsError

    assert DGHeadsError is errors.DGHeadsError
