"""The service's probabilities equal offline scoring of the same files (train/serve skew guard):
``Classifier`` in-process, and training's ``predict`` command (its submission.csv)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize(("precision", "batch_size"), [("fp32", 32), ("auto", 1)])
def test_service_matches_training_predict_submission(
    client_for, service_checkpoint, tmp_path, precision, batch_size
):
    """``invasive-train predict`` on a folder vs the service on the same files. At ``auto`` (bf16
    on capable CPUs) both run batches of one, so the same kernels see the same inputs."""
    folder = tmp_path / "test"
    folder.mkdir()
    files = {
        "1.jpg": jpeg_bytes(size=(640, 480), seed=31),
        "2.png": encode(photo((100, 140), seed=32), "PNG"),
        "10.jpg": jpeg_bytes(size=(64, 64), seed=33),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    submission = tmp_path / "submission.csv"
    command = [sys.executable, "-m", "training", "predict", "--checkpoint", str(service_checkpoint)]
    command += ["--images", str(folder), "--output", str(submission), "--device", "cpu"]
    command += ["--precision", precision, "--batch-size", str(batch_size), "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if "invalid choice: 'predict'" in result.stderr:
        pytest.skip("training's predict command is not available")
    assert result.returncode == 0, result.stderr
    with submission.open() as f:
        offline = {row["name"]: float(row["invasive"]) for row in csv.DictReader(f)}

    service = client_for(precision=precision)
    for name, data in files.items():
        response = service.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
        assert response.status_code == 200, response.text
        assert response.json()["probability"] == pytest.approx(
            offline[Path(name).stem], abs=1e-4
        ), name
