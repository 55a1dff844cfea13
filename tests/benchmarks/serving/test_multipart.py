"""The pre-built bodies must parse as a real upload on the server side (FastAPI's own parser)."""

import pytest
from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient

from benchmarks.serving.multipart import BOUNDARY, content_type, multipart_body


@pytest.fixture(scope="module")
def echo_client() -> TestClient:
    app = FastAPI()

    @app.post("/v1/predict")
    async def echo(file: UploadFile = File(...)) -> dict:  # noqa: B008
        data = await file.read()
        return {
            "filename": file.filename,
            "size": len(data),
            "head": list(data[:4]),
            "type": file.content_type,
        }

    return TestClient(app)


def test_body_is_a_valid_upload_in_field_file(echo_client):
    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"
    body = multipart_body("file", "tile 01.jpg", data)
    resp = echo_client.post("/v1/predict", content=body, headers={"Content-Type": content_type()})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "filename": "tile 01.jpg",
        "size": len(data),
        "head": [255, 216, 255, 224],
        "type": "image/jpeg",
    }


def test_wrong_field_name_is_rejected_by_the_server(echo_client):
    body = multipart_body("image", "a.jpg", b"\xff\xd8")
    resp = echo_client.post("/v1/predict", content=body, headers={"Content-Type": content_type()})
    assert resp.status_code == 422


def test_body_framing():
    body = multipart_body("file", "a.png", b"PNGDATA")
    assert body.startswith(f"--{BOUNDARY}\r\n".encode())
    assert body.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert b"Content-Type: image/png\r\n\r\nPNGDATA\r\n" in body
    assert content_type() == f"multipart/form-data; boundary={BOUNDARY}"


def test_data_containing_the_boundary_is_refused():
    with pytest.raises(ValueError, match="boundary"):
        multipart_body("file", "a.jpg", b"xx" + BOUNDARY.encode() + b"yy")
