"""The class lists of OfficeHome (65) and DomainNet (345) are in the order `ImageFolder` gives their
folders (torchvision's own `find_classes` on folders of those names is the reference)."""

from __future__ import annotations

import pytest
from torchvision.datasets.folder import find_classes

from dg_heads.data.dataset_classes import DOMAIN_NET_CLASSES, OFFICE_HOME_CLASSES


@pytest.mark.parametrize("classes, count, some", [
    (OFFICE_HOME_CLASSES, 65, {"Alarm_Clock", "Webcam", "TV", "ToothBrush"}),
    (DOMAIN_NET_CLASSES, 345, {"aircraft_carrier", "The_Eiffel_Tower", "t-shirt", "teddy-bear", "zigzag"}),
])
def test_classes_in_image_folder_order(tmp_path, classes, count, some):
    assert len(classes) == len(set(classes)) == count and some <= set(classes)
    for name in classes:
        (tmp_path / name).mkdir()
    assert tuple(find_classes(str(tmp_path))[0]) == classes
