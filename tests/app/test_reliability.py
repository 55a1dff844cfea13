"""Supervision, protocol limits and docs exposure, through the real app (TestClient)."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.app.images import jpeg_bytes


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_inference_worker_fails_its_batch_and_is_restarted(client_for):
    client = client_for(inference_workers=1)
    runtime = client.app.state.runtime
    real = runtime.batcher._process
    calls = itertools.count()

    def dies_once(tensors):
        if next(calls) == 0:
            raise SystemExit("simulated thread death")  # a BaseException ends the thread
        return real(tensors)

    runtime.batcher._process = dies_once
    failed = client.post("/v1/predict", files={"file": ("a.jpg", jpeg_bytes(seed=1))})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "inference_failed"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and runtime.metrics.worker_restarts._value.get() < 1:
        time.sleep(0.05)
    assert runtime.metrics.worker_restarts._value.get() == 1
    assert client.get("/health/ready").status_code == 200
    ok = client.post("/v1/predict", files={"file": ("b.jpg", jpeg_bytes(seed=2))})
    assert ok.status_code == 200, ok.text


def test_too_many_headers_is_431(client):
    headers = {f"x-filler-{i}": "1" for i in range(120)}
    response = client.get("/health/live", headers=headers)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "too_many_headers"
    assert client.get("/health/live").status_code == 200


def test_docs_follow_the_api_key_unless_made_public(client_for):
    keyed = client_for(api_key="s3cret")
    for path in ("/docs", "/openapi.json"):
        assert keyed.get(path).status_code == 401
        assert keyed.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200
    schema = keyed.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
    assert "/v1/predict" in schema["paths"]

    public = client_for(api_key="s3cret", public_docs=True)
    assert public.get("/openapi.json").status_code == 200
    hidden = client_for(public_docs=False)  # no key to ask for: the docs are switched off
    assert hidden.get("/docs").status_code == 404
    assert hidden.get("/openapi.json").status_code == 404


def test_running_out_of_gpu_memory_at_warm_up_says_what_to_lower(make_settings, monkeypatch,
                                                                  caplog):
    import torch
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.runtime import ServiceRuntime

    def out_of_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 22.00 MiB.")

    monkeypatch.setattr(ServiceRuntime, "_setup_inference_thread", out_of_memory)
    app = create_app(make_settings(processes=8))
    with pytest.raises(torch.OutOfMemoryError), TestClient(app):
        pass
    hint = [r.getMessage() for r in caplog.records if "out of GPU memory" in r.getMessage()]
    assert hint and "INVASIVE_PROCESSES=8" in hint[0] and "INVASIVE_MAX_BATCH_SIZE" in hint[0]
