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
