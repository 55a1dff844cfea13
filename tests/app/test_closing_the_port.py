"""Closing the port without resetting clients that already connected (app/server.py).

Plain sockets on loopback: the kernel behaviour the drain relies on, without a service.
"""

from __future__ import annotations

import errno
import socket
import sys
import time

import pytest

from app.server import accept_queue_length, stop_new_connections

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux socket filter")


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def _connect(port: int, timeout: float) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def test_connected_clients_are_still_accepted_and_new_ones_are_not(listener):
    port = listener.getsockname()[1]
    early = _connect(port, timeout=2)
    early.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert accept_queue_length(listener) == 1

    assert stop_new_connections(listener)
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # the SYN is dropped: no handshake, no request sent
        _connect(port, timeout=0.4)
    assert time.monotonic() - started >= 0.35

    accepted, _ = listener.accept()  # the client that connected before still gets served
    assert accepted.recv(64).startswith(b"GET / ")
    assert accept_queue_length(listener) == 0
    accepted.close()
    early.close()


def test_a_client_held_off_is_refused_once_the_port_closes(listener):
    port = listener.getsockname()[1]
    assert stop_new_connections(listener)
    client = socket.socket()
    client.settimeout(5)
    client.setblocking(False)
    assert client.connect_ex(("127.0.0.1", port)) in (errno.EINPROGRESS, errno.EAGAIN)
    time.sleep(0.2)
    listener.close()  # the retried SYN finds no listener: refused, never reset mid-request
    client.setblocking(True)
    started = time.monotonic()
    error = client.connect_ex(("127.0.0.1", port))
    assert error == errno.ECONNREFUSED, error
    assert time.monotonic() - started < 3.5
    client.close()


def test_a_socket_that_takes_no_filter_is_reported_not_raised():
    with socket.socket() as sock:
        sock.close()
        assert stop_new_connections(sock) is False
