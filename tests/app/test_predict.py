"""``POST /v1/predict``: formats, modes, EXIF, and every kind of bad upload."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from tests.app.conftest import expected_probabilities
from tests.app.images import encode, image_in_mode, jpeg_bytes, photo, png_bomb_header

NEEDS_AVIF = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")


def post_file(client, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg"):
    return client.post("/v1/predict", files={"file": (filename, data, content_type)})


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_predict_returns_label_probabilities_threshold_model_and_timing(
    client, reference_classifier
):
    data = jpeg_bytes(seed=3)
    response = post_file(client, data)
    assert response.status_code == 200, response.text
    body = response.json()
    meta = reference_classifier.metadata
    assert set(body["probabilities"]) == set(meta.class_names)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["probability"] == pytest.approx(body["probabilities"][meta.positive_class])
    assert body["invasive"] == (body["probability"] >= body["threshold"])
    assert body["threshold"] == meta.threshold
    assert body["label"] in meta.class_names
    assert body["model_id"] == reference_classifier.model_id
    timing = body["timing"]
    assert timing["batch_size"] >= 1
    assert all(timing[k] >= 0 for k in ("decode_ms", "queue_ms", "inference_ms"))
    assert timing["memory_wait_ms"] == 0.0  # an idle service: room at once
    assert list(body["probabilities"].values()) == pytest.approx(
        expected_probabilities(reference_classifier, data), abs=1e-4
    )


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("WEBP", {"quality": 90}),
        ("HEIF", {"quality": 90}),
        pytest.param("AVIF", {"quality": 90}, marks=NEEDS_AVIF),
        ("GIF", {}),  # accepted: decoded as its first frame
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_formats_are_detected_from_bytes_not_the_declared_type(
    client, reference_classifier, fmt, kwargs
):
    data = encode(photo(seed=5), fmt, **kwargs)
    # Declared as something else entirely: only the bytes decide.
    response = post_file(client, data, filename="upload.bin", content_type="text/plain")
    assert response.status_code == 200, response.text
    assert list(response.json()["probabilities"].values()) == pytest.approx(
        expected_probabilities(reference_classifier, data), abs=1e-4
    )


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("L", "JPEG"),
    ],
)
def test_every_mode_is_converted_to_rgb(client, reference_classifier, mode, fmt):
    img = image_in_mode(mode)
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith(mode[0])
    response = post_file(client, data, filename=f"m.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert list(response.json()["probabilities"].values()) == pytest.approx(
        expected_probabilities(reference_classifier, data), abs=1e-4
    )


def test_exif_orientation_is_applied(client, reference_classifier):
    from model.preprocessing import image_to_tensor, resize_for_model

    upright = photo((64, 96), seed=11)  # portrait, as the phone showed it
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # landscape, as the sensor stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    response = post_file(client, data)
    assert response.status_code == 200
    got = list(response.json()["probabilities"].values())

    sensor_pixels = Image.open(io.BytesIO(data)).convert("RGB")  # Pillow ignores EXIF here
    size = reference_classifier.spec.input_size

    def score(img: Image.Image) -> list[float]:
        batch = image_to_tensor(resize_for_model(img, size))[None]
        return reference_classifier.predict_probabilities(batch)[0].tolist()

    turned = score(sensor_pixels.transpose(Image.Transpose.ROTATE_270))
    unturned = score(sensor_pixels)
    # Compared as log-probabilities: a trained model is often near-certain (p ~ 1e-4), where
    # an absolute tolerance would accept anything.
    assert np.log(got) == pytest.approx(np.log(turned), abs=1e-3)
    assert np.abs(np.log(got) - np.log(unturned)).max() > 0.02, "must differ unrotated"


def test_empty_file_is_400(client):
    assert_error(post_file(client, b""), 400, "empty_file")


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"these are not the pixels you are looking for", "notes.txt"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "scan.pdf"),
        (b"\x00" * 1000, "zeros.jpg"),
    ],
)
def test_not_an_image_or_unsupported_format_is_415(client, data, filename):
    assert_error(post_file(client, data, filename=filename), 415, "unsupported_media_type")


def test_truncated_jpeg_is_422(client):
    data = jpeg_bytes(size=(320, 240), seed=2)
    assert_error(post_file(client, data[: len(data) // 2]), 422, "corrupt_image")


def test_decompression_bomb_is_refused_by_pixel_limit(client):
    # Claims 60000 x 60000 = 3.6 gigapixels in a few hundred bytes.
    assert_error(post_file(client, png_bomb_header(60000, 60000)), 413, "image_too_large")


@NEEDS_AVIF
def test_an_avif_over_the_pixel_limit_is_refused_from_its_header(client_for):
    """AVIF is decoded by libavif in the heavy lane; its size comes from the header first."""
    data = encode(photo((320, 240), seed=2), "AVIF")
    response = client_for(max_image_pixels=10_000).post(
        "/v1/predict", content=data, headers={"content-type": "image/avif"}
    )
    assert_error(response, 413, "image_too_large")


def test_pixel_limit_is_configurable(client_for):
    small_limit = client_for(max_image_pixels=1000)
    assert_error(post_file(small_limit, jpeg_bytes(size=(64, 64))), 413, "image_too_large")


def test_file_over_upload_limit_is_413(client_for):
    limited = client_for(max_upload_bytes=2000)
    data = jpeg_bytes(size=(256, 256), seed=1)
    assert len(data) > 2000
    assert_error(post_file(limited, data), 413, "file_too_large")
    assert post_file(limited, jpeg_bytes(size=(16, 16))).status_code == 200


def test_missing_file_field_is_422(client):
    response = client.post("/v1/predict", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert_error(response, 422, "missing_file")


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
def test_the_image_itself_as_the_body_is_scored_like_a_multipart_upload(
    client, reference_classifier, content_type
):
    """curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg', as many phone HTTP clients
    send a photo: the same answer as the multipart upload (the format comes from the bytes, so
    a mislabelled type does not matter)."""
    data = jpeg_bytes(seed=8)
    raw = client.post("/v1/predict", content=data, headers={"content-type": content_type})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert body == post_file(client, data).json() | {"timing": body["timing"]}
    assert list(body["probabilities"].values()) == pytest.approx(
        expected_probabilities(reference_classifier, data), abs=1e-4
    )


def test_a_raw_body_that_is_not_an_image_gets_what_the_same_upload_gets(client):
    text = b"these are not the pixels you are looking for"
    raw = client.post("/v1/predict", content=text, headers={"content-type": "image/jpeg"})
    assert raw.status_code == post_file(client, text).status_code == 415
    assert raw.json() == post_file(client, text).json()


def test_an_empty_raw_body_is_422_saying_how_to_send_the_photo(client):
    response = client.post("/v1/predict", content=b"", headers={"content-type": "image/jpeg"})
    assert_error(response, 422, "missing_file")
    assert "--data-binary" in response.json()["error"]["message"]


def test_a_body_of_another_type_is_415_naming_both_ways_to_send_a_photo(client):
    response = client.post(
        "/v1/predict", content=b'{"image": "..."}', headers={"content-type": "application/json"}
    )
    assert_error(response, 415, "unsupported_media_type")
    message = response.json()["error"]["message"]
    assert "multipart/form-data in field 'file'" in message and "image/jpeg" in message


def test_the_batch_endpoint_takes_multipart_only(client):
    """Several photos need framing: a raw body there is 415, naming the field to use."""
    response = client.post(
        "/v1/predict/batch", content=jpeg_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert_error(response, 415, "unsupported_media_type")
    assert response.json()["error"]["message"] == (
        "send the image(s) as multipart/form-data in field 'files'"
    )


def test_a_raw_body_over_the_upload_limit_is_413_before_it_is_read(client_for):
    small = client_for(max_upload_bytes=1000)
    response = small.post(
        "/v1/predict", content=jpeg_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert_error(response, 413, "file_too_large")
    assert "INVASIVE_MAX_UPLOAD_BYTES" in response.json()["error"]["message"]


def test_malformed_multipart_is_400(client):
    response = client.post(
        "/v1/predict",
        content=b"--xyz\r\nthis is not a part header\r\n\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("invalid_multipart", "missing_file")


def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_a_trailing_slash_never_redirects_to_the_host_header(client):
    """Starlette's slash redirect is built from the Host header (a client's choice) and, behind
    a TLS proxy, points at plain http: a POST is told the path meant, a GET sent on by path."""
    response = client.post(
        "/v1/predict/",
        files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")},
        headers={"host": "evil.example"},
        follow_redirects=False,
    )
    assert_error(response, 404, "not_found")
    assert "location" not in response.headers
    assert "did you mean /v1/predict (without the trailing slash)" in response.text
    assert "evil.example" not in response.text
    unknown = client.get("/v1/nothing-here/")
    assert unknown.json()["error"]["message"] == "no endpoint at /v1/nothing-here/"
    page = client.get("/health/live/?x=1", headers={"host": "evil.example"}, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (307, "/health/live?x=1")
