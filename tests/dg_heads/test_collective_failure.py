"""Which errors the CLI reports as a DDP collective that did not complete (the real one, a gloo
timeout between two processes, is `tests/cli/test_ddp_hang.py`)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from dg_heads.collective_failure import collective_failure_message, is_collective_failure


def test_the_same_words_from_elsewhere_are_not_a_collective_failure():
    try:
        raise RuntimeError("Connection reset by peer")  # e.g. a network file system in a loader
    except RuntimeError as error:
        assert not is_collective_failure(error)


def test_processes_that_never_meet_are_said_as_such():
    try:
        raise dist.DistNetworkError("The client socket has timed out after 15000ms while trying to connect")
    except RuntimeError as error:
        assert is_collective_failure(error)
        message = collective_failure_message(error)
    assert "did not all meet within --ddp_timeout" in message and "timed out after 15000ms" in message


@pytest.mark.skipif(not hasattr(dist, "DistBackendError"), reason="torch < 2.1 has no DistBackendError")
def test_a_backend_error_is_one():
    try:
        raise dist.DistBackendError("NCCL watchdog: collective operation timeout")
    except RuntimeError as error:
        assert is_collective_failure(error)
        assert "a DDP collective did not complete" in collective_failure_message(error)
