"""A client that leaves before its answer takes its work with it."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from app.disconnects import unless_client_leaves
from app.errors import ApiError
from tests.app.test_operations import metric
from tests.app.test_pipeline import big_png
from tests.hostile.server import running_service


def test_work_runs_to_its_answer_while_the_client_stays():
    async def receive():
        await asyncio.sleep(10)  # nothing from the client: no disconnect

    async def work():
        await asyncio.sleep(0.01)
        return "answer"

    assert asyncio.run(unless_client_leaves(receive, work())) == "answer"


def test_work_is_cancelled_when_the_client_leaves_first():
    cancelled = []
    messages = iter([{"type": "http.request", "body": b"", "more_body": False},
                     {"type": "http.disconnect"}])

    async def receive():
        await asyncio.sleep(0.05)
        return next(messages)

    async def work():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        with pytest.raises(ApiError) as gone:
            await unless_client_leaves(receive, work())
        return gone.value

    started = time.monotonic()
    gone = asyncio.run(main())
    assert (gone.status, gone.code) == (499, "client_disconnected")
    assert cancelled == [True]
    assert time.monotonic() - started < 2


def test_a_batch_whose_client_left_is_not_decoded_or_scored(service_checkpoint):
    """Real server: eight slow PNGs (seconds of decoding in the heavy lane), the client closes
    its connection once they are sent; the request ends as 499 at once and nothing is scored."""
    png = big_png(5000)
    boundary = "b0undary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n"
        for i in range(8)
    ) + f"--{boundary}--\r\n".encode()
    head = (
        "POST /v1/predict/batch HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with running_service(service_checkpoint, memory_budget_mb="1024") as service:
        with socket.create_connection(("127.0.0.1", service.port)) as client:
            client.sendall(head + body)
            time.sleep(0.3)
        route = {"route": "/v1/predict/batch", "method": "POST"}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = httpx.get(f"{service.base_url}/metrics").text
            if metric(text, "invasive_http_requests_total", **route, status="499"):
                break
            time.sleep(0.1)
        assert metric(text, "invasive_http_requests_total", **route, status="499") == 1
        assert metric(text, "invasive_images_total", outcome="predicted") == 0
        assert metric(text, "invasive_memory_budget_in_use_bytes") == 0
