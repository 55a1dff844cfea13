"""Health, readiness, model info, metrics, API key and CORS."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.runtime import warmup_batch_sizes
from tests.app.images import jpeg_bytes


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in ``text`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if found == wanted:
            return float(match.group(3))
    return 0.0


def test_liveness(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_health_answers_head_too(client):
    """Some uptime checkers probe with HEAD; a 405 reads as "down"."""
    for path in ("/health/live", "/health/ready"):
        response = client.head(path)
        assert (response.status_code, response.content) == (200, b"")


def test_readiness_is_503_with_reason_until_loaded_and_warmed(make_settings):
    app = create_app(make_settings())
    not_started = TestClient(app)  # no `with`: the lifespan (model load) has not run
    response = not_started.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and "not loaded" in body["reason"]
    assert body["error"]["code"] == "not_ready"
    predict = not_started.post("/v1/predict", files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert predict.status_code == 503
    assert predict.json()["error"]["code"] == "model_not_ready"
    assert predict.headers["retry-after"]
    assert not_started.get("/health/live").status_code == 200

    with TestClient(app) as started:
        response = started.get("/health/ready")
        assert response.status_code == 200
        assert response.json()["status"] == "ready"
    runtime = app.state.runtime
    assert not runtime.ready and runtime.not_ready_reason == "shutting down"


@pytest.mark.parametrize("workers", [1, 2])
def test_warm_up_runs_every_batch_size_before_readiness(make_settings, monkeypatch, workers):
    from app.pipeline import PredictionPipeline

    seen = []
    original = PredictionPipeline.warm_up

    def recording_warm_up(self, batch_sizes, alone_sizes=()):
        seen.append((tuple(batch_sizes), tuple(alone_sizes), app.state.runtime.ready))
        original(self, batch_sizes, alone_sizes)

    monkeypatch.setattr(PredictionPipeline, "warm_up", recording_warm_up)
    app = create_app(make_settings(max_batch_size=12, inference_workers=workers))
    with TestClient(app) as started:
        assert started.get("/health/ready").status_code == 200
    every = (1, 2, 4, 8, 12)
    # every worker warms every size; with several workers, one of them also warms the lone
    # batch on all threads at every size, and the others at batch 1
    expected = [(every, (), False)] if workers == 1 else [
        (every, every, False), (every, (1,), False)
    ]
    assert sorted(seen, key=lambda s: -len(s[1])) == expected
    assert warmup_batch_sizes(1) == (1,)
    assert warmup_batch_sizes(16) == (1, 2, 4, 8, 16)
    assert warmup_batch_sizes(5, every_size=True) == (1, 2, 3, 4, 5)


def test_an_engine_that_takes_any_batch_size_warms_up_at_batch_1(make_settings, monkeypatch):
    """OpenVINO's CPU kernels are not specialised per batch size (model.engines.openvino_engine):
    warming every size cost over a second of start-up and bought nothing."""
    from app.pipeline import PredictionPipeline
    from model.engines.eager import EagerEngine

    seen = []
    original = PredictionPipeline.warm_up

    def recording_warm_up(self, batch_sizes, alone_sizes=()):
        seen.append((tuple(batch_sizes), tuple(alone_sizes)))
        original(self, batch_sizes, alone_sizes)

    monkeypatch.setattr(PredictionPipeline, "warm_up", recording_warm_up)
    monkeypatch.setattr(EagerEngine, "shape_specialised", False)
    app = create_app(make_settings(max_batch_size=12, inference_workers=2))
    with TestClient(app) as started:
        assert started.get("/health/ready").status_code == 200
        assert started.post("/v1/predict/batch", files=[
            ("files", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(5)]).is_success
    assert sorted(seen) == [((1,), (1,)), ((1,), (1,))]


def test_model_info(client, reference_classifier, service_checkpoint):
    body = client.get("/v1/model").json()
    meta = reference_classifier.metadata
    assert body["model_id"] == reference_classifier.model_id
    assert body["demo"] is meta.demo
    assert body["arch"] == meta.arch
    assert body["class_names"] == meta.class_names
    assert body["threshold"] == meta.threshold
    assert body["device"] == "cpu" and body["precision"] == "fp32"
    assert body["checkpoint"] == service_checkpoint.name
    assert body["load_seconds"] > 0
    assert body["metadata"]["positive_class"] == meta.positive_class


def test_model_info_states_the_upload_limits_a_client_can_split_by(client_for):
    limited = client_for(max_batch_files=3, max_upload_bytes=123_456, max_image_pixels=1_000_000)
    assert limited.get("/v1/model").json()["limits"] == {
        "max_upload_bytes": 123_456, "max_batch_files": 3, "max_image_pixels": 1_000_000,
    }


def test_model_info_shows_no_path_of_the_training_host(client_for, tmp_path, service_checkpoint):
    """The training config records where the data and log were; /v1/model (public without a
    key) shows only their last part."""
    from model.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(service_checkpoint)
    loaded.metadata.training_config.update(
        data="/home/ana/projects/kaggle/train", log="/home/ana/run/log.jsonl",
        group_file=r"C:\Users\ana\groups.csv", augment="field",
    )
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", loaded.model, loaded.metadata)
    info = client_for(checkpoint=checkpoint).get("/v1/model").json()
    config = info["metadata"]["training_config"]
    assert (config["data"], config["log"], config["group_file"]) == (
        "train", "log.jsonl", "groups.csv"
    )
    assert config["augment"] == "field"


def test_metrics_move_with_requests(client):
    before = client.get("/metrics").text
    assert client.post(
        "/v1/predict", files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    ).is_success
    assert (
        client.post("/v1/predict", files={"file": ("a.txt", b"text", "text/plain")}).status_code
        == 415
    )
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    route = {"route": "/v1/predict", "method": "POST"}
    for status in ("200", "415"):
        assert metric(text, "invasive_http_requests_total", **route, status=status) == (
            metric(before, "invasive_http_requests_total", **route, status=status) + 1
        )
    name = "invasive_http_request_duration_seconds_count"
    assert metric(text, name, **route) == metric(before, name, **route) + 2
    batches = "invasive_inference_batch_size_count"
    assert metric(text, batches) == metric(before, batches) + 1
    stage = "invasive_stage_duration_seconds_count"
    assert metric(text, stage, stage="decode") == metric(before, stage, stage="decode") + 2
    assert metric(text, "invasive_images_total", outcome="unsupported_media_type") >= 1
    assert metric(text, "invasive_model_load_seconds") > 0
    assert metric(text, "invasive_ready") == 1
    assert "invasive_queue_depth 0.0" in text
    waits = "invasive_memory_budget_wait_seconds_count"  # every request with a body, waited or not
    assert metric(text, waits) == metric(before, waits) + 2


def test_made_up_methods_share_one_metric_label(client):
    """Any token is a method to h11: as a label, each would be a new series held forever."""
    for i in range(3):
        assert client.request(f"X{i}{'A' * 1000}", "/health/live").status_code == 405
    text = client.get("/metrics").text
    assert "AAAA" not in text
    labels = {"route": "/health/live", "method": "other", "status": "405"}
    assert metric(text, "invasive_http_requests_total", **labels) == 3


def test_api_key_guards_everything_but_health_and_metrics(client_for):
    guarded = client_for(api_key="s3cret-key")
    upload = {"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = guarded.post("/v1/predict", files=upload, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert guarded.get("/v1/model", headers=headers).status_code == 401
        assert guarded.post("/v1/predict/batch", headers=headers).status_code == 401
    ok = {"X-API-Key": "s3cret-key"}
    assert guarded.post("/v1/predict", files=upload, headers=ok).status_code == 200
    assert guarded.get("/v1/model", headers=ok).status_code == 200
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert guarded.get(path).status_code == 200


def test_without_api_key_configured_no_key_is_needed(client):
    upload = {"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    assert client.post("/v1/predict", files=upload).status_code == 200
    assert client.post("/v1/predict", files=upload, headers={"X-API-Key": "x"}).status_code == 200


@pytest.mark.parametrize("configured", [True, False])
def test_cors_origins_are_configurable(client_for, configured):
    origin = "https://field-app.example"
    app_client = client_for(cors_origins=[origin] if configured else [])
    response = app_client.options(
        "/v1/predict",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed == (origin if configured else None)


def test_openapi_documents_every_endpoint_with_an_example(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/predict", "/v1/predict/batch", "/v1/model", "/health/live", "/health/ready"):
        assert path in paths
    upload = paths["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in upload["schema"]["properties"]
    components = schema["components"]["schemas"]
    for name in ("PredictionResponse", "BatchResponse", "ModelInfo", "ReadyResponse"):
        assert components[name].get("examples"), name
    assert client.get("/docs").status_code == 200
