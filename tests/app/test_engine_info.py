"""The service builds its inference engine at start-up and says which one runs (/v1/model,
/metrics); a failing engine falls back to eager and the service still starts and answers."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tests.app.conftest import expected_probabilities
from tests.app.images import jpeg_bytes

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)


def test_eager_service_reports_its_engine(client):
    engine = client.get("/v1/model").json()["engine"]
    assert engine == {
        "name": "eager", "requested": "eager", "precision": "fp32", "from_cache": None,
        "conversion_seconds": None, "fallback_reason": None,
    }


@needs_openvino
def test_openvino_service_converts_once_then_reads_the_cache(
    client_for, tmp_path, reference_classifier
):
    first = client_for(engine="openvino", engine_cache_dir=tmp_path)
    body = first.get("/v1/model").json()
    assert body["precision"] == "fp32"
    engine = body["engine"]
    assert (engine["name"], engine["requested"], engine["from_cache"]) == (
        "openvino", "openvino", False
    )
    assert engine["conversion_seconds"] > 0 and engine["fallback_reason"] is None
    metrics = first.get("/metrics").text
    assert 'invasive_engine_conversion_seconds{engine="openvino",from_cache="false"}' in metrics

    data = jpeg_bytes(size=(200, 150), seed=7)
    answer = first.post("/v1/predict", files={"file": ("p.jpg", data, "image/jpeg")})
    assert answer.status_code == 200
    got = list(answer.json()["probabilities"].values())
    np.testing.assert_allclose(got, expected_probabilities(reference_classifier, data), atol=1e-4)

    second = client_for(engine="openvino", engine_cache_dir=tmp_path)
    assert second.get("/v1/model").json()["engine"]["from_cache"] is True
    assert 'from_cache="true"' in second.get("/metrics").text


def test_failing_engine_falls_back_and_the_service_serves(client_for, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    service = client_for(engine="openvino")
    assert service.get("/health/ready").status_code == 200
    engine = service.get("/v1/model").json()["engine"]
    assert engine["name"] == "eager" and engine["requested"] == "openvino"
    assert engine["fallback_reason"].startswith("openvino: ModuleNotFoundError")
    warnings = [r for r in caplog.records if r.name == "model.engines"]
    assert len(warnings) == 1 and "running eager PyTorch instead" in warnings[0].getMessage()
    answer = service.post("/v1/predict", files={"file": ("p.jpg", jpeg_bytes(), "image/jpeg")})
    assert answer.status_code == 200
