"""The service's probabilities equal offline scoring of the same files (train/serve skew guard)."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference import Classifier
from model.preprocessing import prepare_input
from tests.app.images import encode, jpeg_bytes, photo


def parity_files() -> dict[str, bytes]:
    return {
        "large.jpg": jpeg_bytes(size=(640, 480), seed=21),  # decoded at reduced scale (draft)
        "small.jpg": jpeg_bytes(size=(50, 40), seed=22),  # upsampled
        "tile.png": encode(photo((128, 128), seed=23), "PNG"),
        "phone.heic": encode(photo((300, 200), seed=24), "HEIF", quality=90),
    }


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_service_matches_offline_scoring(client_for, service_checkpoint, precision):
    service = client_for(precision=precision)
    offline = Classifier.from_checkpoint(service_checkpoint, device="cpu", precision=precision)
    assert service.get("/v1/model").json()["precision"] == offline.precision
    files = parity_files()
    for name, data in files.items():
        response = service.post(
            "/v1/predict", files={"file": (name, data, "application/octet-stream")}
        )
        assert response.status_code == 200, response.text
        got = np.array(list(response.json()["probabilities"].values()))
        want = offline.predict_probabilities(prepare_input(data, offline.spec)[None])[0]
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
        if offline.precision == "fp32":  # near-certain outputs: also agree in log space
            np.testing.assert_allclose(np.log(got), np.log(want), atol=1e-3, err_msg=name)

    batch = service.post(
        "/v1/predict/batch", files=[("files", (n, d, "image/jpeg")) for n, d in files.items()]
    ).json()
    stacked = np.stack([prepare_input(d, offline.spec) for d in files.values()])
    import torch

    want_all = offline.predict_probabilities(torch.from_numpy(stacked))
    tolerance = 1e-4 if offline.precision == "fp32" else 1e-2  # bf16 kernels vary with batch
    for result, want in zip(batch["results"], want_all, strict=True):
        got = np.array(list(result["prediction"]["probabilities"].values()))
        np.testing.assert_allclose(got, want, atol=tolerance, err_msg=result["filename"])
