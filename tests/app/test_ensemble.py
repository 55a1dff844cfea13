"""A 5-fold ensemble end to end: ``fit --folds 5 --ensemble`` writes one checkpoint holding the
five fold models; it scores as the mean of their probabilities; the service serves it and matches
offline scoring (``Classifier`` and ``invasive-train predict``) to 1e-4; ``/v1/model`` states its
cost."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.inference import Classifier
from model.preprocessing import prepare_input
from tests.app.images import encode, jpeg_bytes, photo
from tests.training.conftest import tiny_config
from training.demo import write_demo_dataset
from training.errors import TrainingError
from training.fit import fit


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory) -> tuple[dict, Path]:
    """5-fold CV with --ensemble on 20 generated photos in 10 groups (seconds of CPU)."""
    root = tmp_path_factory.mktemp("ensemble")
    data = write_demo_dataset(root / "kaggle", images_per_class=10, size=(48, 36))
    rows = "".join(f"{n},photo{(n - 1) // 2}\n" for n in range(1, 21))
    (data / "meta.csv").write_text("name,source_image\n" + rows)
    summary = fit(tiny_config(data, root / "cv", folds=5, ensemble=True, epochs=2, patience=5,
                              group_column="source_image", group_file=data / "meta.csv"))
    return summary, Path(summary["ensemble"]["checkpoint"])


def photos() -> dict[str, bytes]:
    return {
        "1.jpg": jpeg_bytes(size=(640, 480), seed=41),
        "2.png": encode(photo((100, 140), seed=42), "PNG"),
        "3.jpg": jpeg_bytes(size=(64, 64), seed=43),
    }


def test_the_checkpoint_holds_the_five_fold_models(ensemble_run):
    summary, path = ensemble_run
    loaded = load_checkpoint(path)
    meta = loaded.metadata
    assert path.name == "ensemble.safetensors" and meta.ensemble.members == 5
    assert loaded.model_id.startswith("resnet18x5-")
    assert [m["fold"] for m in meta.ensemble.member_info] == [1, 2, 3, 4, 5]
    assert [m["file"] for m in meta.ensemble.member_info] == [
        Path(c).name for c in summary["checkpoints"]]
    # The threshold is the one chosen on the pooled out-of-fold predictions, and says so.
    assert meta.threshold == pytest.approx(summary["threshold"])
    assert meta.metrics["threshold_method"] == "youden_j"
    assert "out-of-fold" in meta.metrics["threshold_chosen_on"]
    assert meta.metrics["oof"]["roc_auc"] == pytest.approx(summary["roc_auc_oof"])


def test_it_scores_the_mean_of_the_fold_models(ensemble_run):
    summary, path = ensemble_run
    ensemble = Classifier.from_checkpoint(path, device="cpu", precision="fp32")
    folds = [Classifier.from_checkpoint(c, device="cpu", precision="fp32")
             for c in summary["checkpoints"]]
    batch = torch.from_numpy(np.stack([prepare_input(d, ensemble.spec)
                                       for d in photos().values()]))
    want = np.mean([f.predict_probabilities(batch) for f in folds], axis=0)
    np.testing.assert_allclose(ensemble.predict_probabilities(batch), want, atol=1e-6)


def test_the_service_matches_offline_scoring(ensemble_run, client_for, tmp_path):
    _, path = ensemble_run
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos().items():
        (folder / name).write_bytes(data)
    submission = tmp_path / "submission.csv"
    command = [sys.executable, "-m", "training", "predict", "--checkpoint", str(path),
               "--images", str(folder), "--output", str(submission), "--device", "cpu",
               "--precision", "fp32", "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    with submission.open() as f:
        offline = {row["name"]: float(row["invasive"]) for row in csv.DictReader(f)}
    reference = Classifier.from_checkpoint(path, device="cpu", precision="fp32")

    service = client_for(checkpoint=path)
    for name, data in photos().items():
        response = service.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["probability"] == pytest.approx(offline[Path(name).stem], abs=1e-4), name
        want = reference.predict_probabilities(prepare_input(data, reference.spec)[None])[0]
        np.testing.assert_allclose(list(body["probabilities"].values()), want, atol=1e-4)
    batch = service.post("/v1/predict/batch", files=[
        ("files", (n, d, "image/jpeg")) for n, d in photos().items()]).json()
    for item in batch["results"]:
        got = item["prediction"]["probability"]
        assert got == pytest.approx(offline[Path(item["filename"]).stem], abs=1e-4)


def test_model_info_states_the_cost_per_image(ensemble_run, client_for, service_checkpoint):
    _, path = ensemble_run
    single = client_for().get("/v1/model").json()
    info = client_for(checkpoint=path).get("/v1/model").json()
    assert single["cost"]["members"] == 1 and single["cost"]["forward_passes_per_image"] == 1
    assert info["cost"]["members"] == 5 and info["cost"]["forward_passes_per_image"] == 5
    assert info["cost"]["gflops_per_image"] == pytest.approx(
        5 * single["cost"]["gflops_per_image"] * (32 / 64) ** 2, rel=0.02)  # 32 px vs 64 px
    assert info["model_id"].startswith("resnet18x5-")
    assert info["metadata"]["ensemble"]["members"] == 5
    assert json.dumps(info)  # plain JSON all the way down


def test_ensemble_without_folds_is_refused(tmp_path):
    data = write_demo_dataset(tmp_path / "kaggle", images_per_class=4, size=(32, 32))
    with pytest.raises(TrainingError, match="--folds"):
        fit(tiny_config(data, tmp_path / "m.safetensors", ensemble=True))
