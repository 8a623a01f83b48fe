"""The suite's network guard (tests/conftest.py) itself: no test can silently download."""

import socket

import pytest


def test_connecting_to_another_host_fails_at_once():
    # 192.0.2.0/24 is reserved for documentation (RFC 5737): without the guard this would time out
    # after 1 s with another message, so the test fails if the guard is gone
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, \
            pytest.raises(OSError, match="a test tried to reach the network"):
        sock.settimeout(1)
        sock.connect(("192.0.2.1", 9))


def test_local_connections_still_work():
    """DDP rendezvous and the SLURM daemons talk over localhost."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
