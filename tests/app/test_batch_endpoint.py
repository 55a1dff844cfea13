"""``POST /v1/predict/batch``: order, file names, per-file errors, limits."""

from __future__ import annotations

import pytest

from tests.app.conftest import expected_probabilities
from tests.app.images import encode, jpeg_bytes, photo


def test_mixed_batch_keeps_order_and_fails_only_the_bad_files(client, reference_classifier):
    good_a, good_b = jpeg_bytes(seed=1), encode(photo(seed=2), "PNG")
    truncated = jpeg_bytes(size=(200, 150), seed=3)[:400]
    files = [
        ("files", ("a.jpg", good_a, "image/jpeg")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
        ("files", ("b.png", good_b, "image/png")),
        ("files", ("notes.txt", b"just text", "text/plain")),
        ("files", ("cut.jpg", truncated, "image/jpeg")),
    ]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 5 and body["succeeded"] == 2
    assert body["model_id"] == reference_classifier.model_id
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["filename"] for r in results] == [
        "a.jpg",
        "empty.jpg",
        "b.png",
        "notes.txt",
        "cut.jpg",
    ]
    assert [r["status"] for r in results] == [200, 400, 200, 415, 422]
    assert [r["error"] and r["error"]["code"] for r in results] == [
        None,
        "empty_file",
        None,
        "unsupported_media_type",
        "corrupt_image",
    ]
    for result, data in ((results[0], good_a), (results[2], good_b)):
        assert result["error"] is None
        assert list(result["prediction"]["probabilities"].values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


def test_batch_items_share_forward_passes(client):
    files = [("files", (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")) for i in range(6)]
    body = client.post("/v1/predict/batch", files=files).json()
    sizes = [r["prediction"]["timing"]["batch_size"] for r in body["results"]]
    assert max(sizes) > 1, f"batch items went through the model one by one: {sizes}"


def test_too_many_files_is_413(client_for):
    limited = client_for(max_batch_files=2)
    files = [("files", (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")) for i in range(3)]
    response = limited.post("/v1/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_files"
    assert limited.post("/v1/predict/batch", files=files[:2]).status_code == 200


def test_batch_without_files_is_422(client):
    response = client.post(
        "/v1/predict/batch", files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "missing_file"
