"""Connections that never finish their request head are closed (app/head_timeout.py).

Against the real server (uvicorn's own parser, the server's once-a-second sweep), with a 1 s
deadline: a silent connection is closed without an answer, a trickling one gets 408
``header_timeout`` and is closed, a kept-alive connection gets a fresh deadline after each
response, and a slow body is not the head's business.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.app.images import jpeg_bytes
from tests.hostile.rawhttp import Request, build, exchange, read_response
from tests.hostile.server import running_service

HEAD_TIMEOUT_S = 1.0
SWEEP_S = 1.0  # the server checks deadlines once a second


@pytest.fixture(scope="module")
def service(demo_checkpoint: Path):
    with running_service(
        demo_checkpoint, header_timeout_s=str(HEAD_TIMEOUT_S), receive_timeout_s="20"
    ) as running:
        yield running


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(service):
    answer = exchange(service.port, Request(head=b""), timeout=HEAD_TIMEOUT_S + 10)
    print(f"\nsilent connection closed after {answer.elapsed_s:.2f}s")
    assert HEAD_TIMEOUT_S * 0.9 <= answer.elapsed_s < HEAD_TIMEOUT_S + SWEEP_S + 1
    # No answer to a request never sent (a browser's preconnection): closed, nothing written.
    assert answer.status is None and answer.raw == b""


def test_a_head_trickled_byte_by_byte_is_cut_off(service):
    head = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
    trickle = Request(  # one byte every 50 ms: would take 12 s to finish
        head=head[:1], stream=lambda: (head[i : i + 1] for i in range(1, len(head))), pause_s=0.05
    )
    answer = exchange(service.port, trickle, timeout=HEAD_TIMEOUT_S + 10)
    print(f"trickled head cut off after {answer.elapsed_s:.2f}s, {answer.body_bytes_sent} bytes")
    assert answer.elapsed_s < HEAD_TIMEOUT_S + SWEEP_S + 1
    assert answer.body_bytes_sent < len(head) - 1
    assert (answer.status, answer.error_code) == (408, "header_timeout"), answer.summary()
    assert "INVASIVE_HEADER_TIMEOUT_S" in answer.error_message


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(service):
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        for _ in range(3):  # three requests, each well within its deadline, 0.8 s apart
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = read_response(sock)
            assert (answer.status, answer.json()) == (200, {"status": "alive"}), answer.summary()
            time.sleep(0.8)  # 2.4 s on one connection in all: more than one deadline
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")  # then a head left unfinished
        answer = read_response(sock, timeout=HEAD_TIMEOUT_S + 10)
    assert answer.elapsed_s < HEAD_TIMEOUT_S + SWEEP_S + 1
    assert (answer.status, answer.error_code) == (408, "header_timeout"), answer.summary()


def test_a_slow_body_is_not_cut_off_by_the_head_deadline(service):
    photo = jpeg_bytes((64, 48), seed=5)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--b--\r\n"
    )
    quarter = len(body) // 4 + 1
    slow = build(  # the body over ~2 s, twice the head's deadline
        "POST", "/v1/predict", [("Content-Type", "multipart/form-data; boundary=b")], body,
        stream=lambda: (body[i : i + quarter] for i in range(0, len(body), quarter)),
        pause_s=0.5,
    )
    answer = exchange(service.port, slow, timeout=20)
    assert answer.status == 200, answer.summary()
    assert answer.elapsed_s > HEAD_TIMEOUT_S
    assert "probability" in answer.json()
    assert "Traceback" not in service.log()
