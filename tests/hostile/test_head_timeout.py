"""Connections that never finish their request head are closed (app/head_timeout.py).

Against the real server (uvicorn's own parser and timers), with a 1 s deadline: a silent
connection is closed without an answer, a trickling one gets 408 ``header_timeout`` and is
closed, a kept-alive connection gets a
fresh deadline after each response, a slow body is not the head's business, and the service
answers ordinary requests throughout.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.app.images import jpeg_bytes
from tests.hostile.server import running_service

HEAD_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def service(demo_checkpoint: Path):
    with running_service(
        demo_checkpoint, header_timeout_s=str(HEAD_TIMEOUT_S), receive_timeout_s="20"
    ) as running:
        yield running


def _connect(service) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def _read_one_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(
        line.split(b":", 1)[1] for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _answers(data: bytes) -> list[tuple[int, dict | None]]:
    """Status and JSON body of each response in ``data`` (Content-Length framed)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        body, data = rest[:length], rest[length:]
        out.append((int(lines[0].split()[1]), json.loads(body) if body else None))
    return out


def _photo_request(keep_alive: bool = True) -> bytes:
    photo = jpeg_bytes((64, 48), seed=5)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--b--\r\n"
    )
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(service):
    with _connect(service) as sock:
        data, waited = _read_until_closed(sock)
    print(f"\nsilent connection closed after {waited:.2f}s")
    assert HEAD_TIMEOUT_S * 0.9 <= waited < HEAD_TIMEOUT_S + 2
    assert data == b""  # no answer to a request never sent (a browser's preconnection)


def test_a_head_trickled_byte_by_byte_is_cut_off(service):
    head = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
    with _connect(service) as sock:
        started = time.monotonic()
        sent = 0
        try:
            for byte in head:  # one byte every 50 ms: would take 12 s to finish
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, _ = _read_until_closed(sock)
        waited = time.monotonic() - started
    print(f"trickled head cut off after {waited:.2f}s, {sent} bytes sent")
    assert waited < HEAD_TIMEOUT_S + 2 and sent < len(head)
    ((status, body),) = _answers(data)
    assert status == 408 and body["error"]["code"] == "header_timeout"
    assert "INVASIVE_HEADER_TIMEOUT_S" in body["error"]["message"]


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(service):
    with _connect(service) as sock:
        for _ in range(3):  # three requests, each well within its deadline, 0.6 s apart
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = _read_one_response(sock)
            assert _answers(reply) == [(200, {"status": "alive"})], reply[:200]
            time.sleep(0.6)  # 1.8 s on one connection in all: more than one deadline
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")  # then a head left unfinished
        data, waited = _read_until_closed(sock)
    assert waited < HEAD_TIMEOUT_S + 2
    assert [status for status, _ in _answers(data)] == [408]


def test_a_slow_body_is_not_cut_off_by_the_head_deadline(service):
    request = _photo_request(keep_alive=False)
    head_end = request.index(b"\r\n\r\n") + 4
    with _connect(service) as sock:
        sock.sendall(request[:head_end])
        body = request[head_end:]
        for start in range(0, len(body), len(body) // 4 + 1):  # the body over ~2 s
            time.sleep(0.5)
            sock.sendall(body[start : start + len(body) // 4 + 1])
        data, _ = _read_until_closed(sock)
    ((status, answer),) = _answers(data)
    assert status == 200, answer
    assert answer["label"] in ("invasive", "not_invasive") or "probability" in answer
    assert "Traceback" not in service.log()
