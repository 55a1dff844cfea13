"""Many clients at once: all answered correctly, really batched, and a full queue says 503."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.app.conftest import expected_probabilities
from tests.app.images import jpeg_bytes
from tests.app.test_operations import metric


def test_32_concurrent_requests_are_answered_correctly_and_batched(
    client_for, reference_classifier
):
    service = client_for(max_batch_size=16, max_batch_wait_ms=20)
    images = [jpeg_bytes(seed=100 + i) for i in range(32)]
    start = threading.Barrier(32)

    def send(data: bytes):
        start.wait()
        return service.post("/v1/predict", files={"file": ("p.jpg", data, "image/jpeg")})

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(send, images))

    assert [r.status_code for r in responses] == [200] * 32
    for response, data in zip(responses, images, strict=True):
        assert list(response.json()["probabilities"].values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        ), "a response carried another request's row"
    sizes = [r.json()["timing"]["batch_size"] for r in responses]
    assert max(sizes) > 1
    text = service.get("/metrics").text
    batches = metric(text, "invasive_inference_batch_size_count")
    singles = metric(text, "invasive_inference_batch_size_bucket", le="1.0")
    assert batches < 32 and singles < batches, "the batch-size histogram shows no batch > 1"
    assert metric(text, "invasive_inference_batch_size_sum") == 32


class GatedModel(torch.nn.Module):
    """Wraps the served network; forward passes block until the test opens the gate."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.gate.wait(30)
        return self.inner(x)


def test_full_queue_answers_503_with_retry_after(client_for):
    service = client_for(max_batch_size=1, queue_limit=2, max_batch_files=2)
    runtime = service.app.state.runtime
    gated = GatedModel(runtime.classifier.model)
    runtime.classifier.model = gated
    upload = {"file": ("p.jpg", jpeg_bytes(), "image/jpeg")}

    def post():
        return service.post("/v1/predict", files=upload)

    with ThreadPoolExecutor(3) as pool:
        try:
            in_model = pool.submit(post)
            assert gated.entered.wait(10)
            queued = [pool.submit(post) for _ in range(2)]
            deadline = time.monotonic() + 10
            while runtime.batcher.queue_depth < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert runtime.batcher.queue_depth == 2

            refused = post()
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "queue_full"
            assert int(refused.headers["retry-after"]) >= 1
            batch = service.post("/v1/predict/batch", files=[("files", upload["file"])])
            assert batch.status_code == 503
        finally:
            gated.gate.set()
        assert [f.result().status_code for f in (in_model, *queued)] == [200, 200, 200]
    assert post().status_code == 200
    text = service.get("/metrics").text
    assert (
        metric(
            text, "invasive_http_requests_total", route="/v1/predict", method="POST", status="503"
        )
        == 1
    )
