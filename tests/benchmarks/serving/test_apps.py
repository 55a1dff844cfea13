"""The baseline servers score with the same checkpoint; LitServe's also with exactly our code."""

import io

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from starlette.datastructures import UploadFile

from benchmarks.serving.fixtures import build_checkpoint
from model.inference import Classifier
from model.preprocessing import prepare_input


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.safetensors", "resnet18", 32)


def _jpeg(colour, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


def test_naive_app_answers_a_multipart_upload(checkpoint):
    from benchmarks.serving.naive_app import create_app

    client = TestClient(create_app(str(checkpoint)))
    assert client.get("/health").status_code == 200
    resp = client.post("/v1/predict", files={"file": ("a.jpg", _jpeg((10, 200, 30)), "image/jpeg")})
    assert resp.status_code == 200, resp.text
    probs = resp.json()["probabilities"]
    assert set(probs) == {"other", "hogweed"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_litserve_api_scores_like_the_shared_classifier(checkpoint):
    pytest.importorskip("litserve", reason="LitServe baseline needs the bench extra")
    from benchmarks.serving.litserve_app import ClassifierAPI

    api = ClassifierAPI(str(checkpoint), "fp32", 1, max_batch_size=4, batch_timeout=0.0)
    api.setup("cpu")
    images = [_jpeg((10, 200, 30)), _jpeg((200, 10, 90), size=(90, 40))]
    tensors = [
        api.decode_request({"file": UploadFile(io.BytesIO(d), filename="a.jpg")}) for d in images
    ]
    rows = api.unbatch(api.predict(api.batch(tensors)))
    responses = [api.encode_response(row) for row in rows]

    reference = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    expected = reference.predict_probabilities(
        torch.stack([prepare_input(d, reference.spec) for d in images])
    )
    for response, row in zip(responses, expected, strict=True):
        assert response["probabilities"]["hogweed"] == pytest.approx(float(row[1]), abs=1e-6)
        assert response["model_id"] == reference.model_id
