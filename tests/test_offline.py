"""The suite's network guard (tests/conftest.py) itself: no test can silently download."""

import urllib.request

import pytest


def test_reaching_another_machine_fails_at_once():
    with pytest.raises(OSError, match="a test tried to reach the network"):
        urllib.request.urlopen("http://192.0.2.1/", timeout=5)  # TEST-NET-1: never a real host
