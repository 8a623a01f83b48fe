"""End-of-run reports: images scored against the split sizes."""

import pytest

from dg_heads.errors import DGHeadsError
from dg_heads.reporting import skipped_images


def test_skipped_images_are_reported_per_domain():
    accs = {"test/acc/75": 0.5, "test/n/75": 1790.0, "val/n/0": 359.0}
    notes = skipped_images(accs, {"val": {"0": 359}, "test": {"75": 1797}})
    assert notes == ["test domain '75': scored 1790 of 1797 images (7 unreadable, skipped; named in the log)"]


def test_a_domain_with_no_readable_image_is_an_error_not_a_score():
    with pytest.raises(DGHeadsError, match="test domain '75': none of its 1797 images could be read"):
        skipped_images({"test/acc/75": 0.0, "test/n/75": 0.0}, {"test": {"75": 1797}})


def test_a_split_the_trainer_limits_is_not_reported_as_unreadable_images():
    """`--trainer.limit_val_batches 1` scores one batch of each domain: 32 of 359 scored is not
    327 unreadable images (a reviewer's fit printed "103 unreadable" five times)."""
    from types import SimpleNamespace

    from dg_heads.reporting import limited_splits

    accs = {"val/n/0": 32.0, "test/n/75": 1790.0}
    sizes = {"val": {"0": 359}, "test": {"75": 1797}}
    assert skipped_images(accs, sizes, {"val"}) == [
        "test domain '75': scored 1790 of 1797 images (7 unreadable, skipped; named in the log)"]
    assert limited_splits(SimpleNamespace(limit_val_batches=1, limit_test_batches=1.0)) == {"val"}
    assert limited_splits(SimpleNamespace(limit_val_batches=0.5, limit_test_batches=3)) == {"val", "test"}
    assert limited_splits(SimpleNamespace(limit_val_batches=1.0, limit_test_batches=1.0)) == set()
