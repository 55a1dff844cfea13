"""Multi-class data (class folders with no invasive class): metrics, and fit -> checkpoint ->
evaluate -> predict -> the service, end to end on generated colour-coded photos."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import CheckpointMetadata, read_metadata
from training.cli import main
from training.data import load_labelled_data
from training.errors import DataError
from training.fit import fit
from training.metrics import multiclass_metrics
from training.validation import checkpoint_update, epoch_figures

from .conftest import tiny_config

CLASSES = {"balsam": (200, 40, 160), "hogweed": (235, 235, 225), "knotweed": (40, 150, 40)}


# ---- metrics -----------------------------------------------------------------------------------


def test_multiclass_metrics_known_values():
    y = np.array([0, 1, 2, 2])
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.5, .3, .2]])
    m = multiclass_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                   "support": 1}
    assert m["per_class"]["c"]["recall"] == 0.5 and m["per_class"]["c"]["support"] == 2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    expected_loss = -np.mean(np.log([.8, .7, .7, .2]))
    assert m["log_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert m["roc_auc"] == pytest.approx(1.0)  # every class's own column ranks it first
    assert m["count"] == 4 and m["class_names"] == ["a", "b", "c"]


def test_multiclass_metrics_missing_class_and_two_classes():
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.6, .3, .1]])
    m = multiclass_metrics(np.array([0, 1, 1]), p, ["a", "b", "c"])
    assert math.isnan(m["roc_auc"])  # class c has no image: one-vs-rest undefined
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    two = multiclass_metrics(np.array([0, 1, 1, 0]),
                             np.array([[.8, .2], [.2, .8], [.6, .4], [.5, .5]]), ["a", "b"])
    assert two["roc_auc"] == pytest.approx(0.75) and two["accuracy"] == pytest.approx(0.75)


def test_multiclass_epochs_record_f1_and_keep_no_threshold():
    m = multiclass_metrics(np.array([0, 1]), np.array([[.9, .1], [.2, .8]]), ["a", "b"])
    assert set(epoch_figures(m)) == {"val_loss", "val_roc_auc", "val_accuracy", "val_macro_f1"}
    update = checkpoint_update(m, 3)
    assert "threshold" not in update and update["metrics"]["selection"] == "log_loss"
    assert update["metrics"]["validation"]["epoch"] == 3


def test_metadata_positive_class_is_optional_but_stated_and_checked():
    meta = CheckpointMetadata(arch="resnet18", class_names=["a", "b", "c"], positive_class=None)
    assert meta.multiclass and meta.task == "multiclass"
    assert CheckpointMetadata(arch="resnet18", class_names=["a", "b"],
                              positive_class="b").task == "binary"
    with pytest.raises(ValueError, match="positive_class"):
        CheckpointMetadata(arch="resnet18", class_names=["a", "b"], positive_class="z")
    with pytest.raises(ValueError, match="positive_class"):  # never defaulted to multi-class
        CheckpointMetadata(arch="resnet18", class_names=["a", "b"])


# ---- end to end --------------------------------------------------------------------------------


def colour_photo(rgb: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    pixels = np.clip(np.array(rgb) + rng.normal(0, 12, size=(36, 48, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def write_colour_folders(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name, rgb in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour_photo(rgb, rng).save(root / name / f"{name}-{i}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multiclass")
    data = write_colour_folders(root / "data")
    ckpt = root / "model.safetensors"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = fit(tiny_config(data, ckpt, epochs=3, lr=3e-3, val_fraction=0.34))
    return {"root": root, "data": data, "checkpoint": ckpt, "result": result,
            "printed": printed.getvalue()}


def test_data_without_invasive_class_is_multiclass(trained):
    data = load_labelled_data(trained["data"])
    assert data.multiclass and data.class_names == sorted(CLASSES)


def test_fit_selects_by_log_loss_and_checkpoint_says_multiclass(trained):
    meta = read_metadata(trained["checkpoint"])
    assert meta.multiclass and meta.positive_class is None and meta.task == "multiclass"
    assert meta.class_names == sorted(CLASSES)
    assert meta.metrics["selection"] == "log_loss" and "threshold_method" not in meta.metrics
    validation = meta.metrics["validation"]
    assert set(validation["per_class"]) == set(CLASSES) and "macro_f1" in validation
    history = trained["result"]["history"]
    assert all("val_macro_f1" in e and "threshold" not in e for e in history)
    best = min(history, key=lambda e: e["val_loss"])  # the kept epoch: lowest validation loss
    assert validation["epoch"] == best["epoch"]
    assert trained["result"]["task"] == "multiclass"
    printed = trained["printed"]
    assert "multi-class: no --positive-class and no folder named invasive" in printed
    assert "* = lowest validation log loss so far" in printed
    assert "top-1 accuracy" in printed and "macro-F1" in printed
    assert "Youden" not in printed and "val_f1" in printed


def test_fixed_schedule_keeps_the_last_epoch_for_multiclass_too(trained, tmp_path,
                                                               monkeypatch):
    """Audit: README and summary said multi-class keeps the lowest-log-loss epoch; under the
    default fixed schedule (--patience 0) it keeps the last, as binary does (by design: the
    schedule, not a small validation split, decides), and now says so."""
    from training import fit as fit_module

    real, losses = fit_module.validation_metrics, iter([0.9, 0.4, 0.7])

    def scripted(data, labels, probs):
        metrics, _ = real(data, labels, probs)
        loss = next(losses)
        return {**metrics, "log_loss": loss}, -loss

    monkeypatch.setattr(fit_module, "validation_metrics", scripted)
    ckpt = tmp_path / "model.safetensors"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = fit(tiny_config(trained["data"], ckpt, epochs=3, lr=3e-3, val_fraction=0.34,
                                 patience=0))
    meta = read_metadata(ckpt)
    assert meta.metrics["validation"]["epoch"] == result["kept"]["epoch"] == 3
    assert meta.metrics["selection"] == "last_epoch"
    assert result["best"]["epoch"] == 2
    text = printed.getvalue()
    assert ("* = lowest validation log loss so far; the checkpoint is saved every epoch and the "
            "last one kept (--patience 0)") in text
    assert ("  kept epoch  3 of 3: the last (--patience 0); the best validation log loss was "
            "epoch 2's (log loss 0.4000), not kept") in text
    assert "  answer      the top class (multi-class: no threshold)\n" in text
    assert "lean optimistic" not in text  # nothing was chosen on the validation images


def test_folds_refuse_multiclass_data(trained, tmp_path):
    with pytest.raises(DataError, match="--folds is for binary data; multi-class CV is not "
                                        "supported yet"):
        fit(tiny_config(trained["data"], tmp_path / "cv", folds=2))
    assert not (tmp_path / "cv").exists()


def test_evaluate_reports_every_class(trained, capsys):
    out = trained["root"] / "eval"
    assert main(["evaluate", "--checkpoint", str(trained["checkpoint"]), "--data",
                 str(trained["data"]), "--output", str(out), "--workers", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((out / "metrics.json").read_text())
    assert report["task"] == "multiclass" and summary["task"] == "multiclass"
    for name in CLASSES:
        assert set(report["per_class"][name]) == {"precision", "recall", "f1", "support"}
        assert report["per_class"][name]["support"] == 6
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    assert report["log_loss"] > 0 and report["count"] == 18
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 18
    assert np.trace(matrix) == round(report["accuracy"] * 18)
    assert "threshold" not in report and "positive_class" not in report
    assert Image.open(out / "confusion_matrix.png").format == "PNG"
    assert not (out / "roc.png").exists()
    with (out / "misclassified.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["misclassified"]["count"] == 18 - np.trace(matrix)
    assert all(r["predicted"] != r["true_class"] for r in rows)


def test_evaluate_refuses_positive_class_on_a_multiclass_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(trained["checkpoint"]), "--data",
                 str(trained["data"]), "--output", str(out), "--workers", "0",
                 "--positive-class", "hogweed"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --positive-class 'hogweed': this checkpoint is multi-class")
    assert "fit --positive-class hogweed" in err and "Traceback" not in err
    assert not out.exists()


def predict_csv(trained) -> list[dict[str, str]]:
    out = trained["root"] / "predictions.csv"
    if not out.exists():
        assert main(["predict", "--checkpoint", str(trained["checkpoint"]), "--images",
                     str(trained["data"]), "--output", str(out), "--workers", "0",
                     "--device", "cpu", "--precision", "fp32"]) == 0  # as the test service
    with out.open() as f:
        return list(csv.DictReader(f))


def test_predict_writes_the_top_class_and_every_probability(trained):
    rows = predict_csv(trained)
    assert len(rows) == 18 and list(rows[0]) == ["name", "label", *sorted(CLASSES)]
    for row in rows:
        probs = {c: float(row[c]) for c in CLASSES}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == max(probs, key=probs.get)


def test_service_answers_label_and_every_class_probability(trained):
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.app.conftest import isolated_settings

    settings = isolated_settings(trained["checkpoint"])
    photo = trained["data"] / "hogweed" / "hogweed-0.jpg"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        info = client.get("/v1/model").json()
        single = client.post("/v1/predict", files={"file": ("p.jpg", photo.read_bytes())})
        batch = client.post("/v1/predict/batch",
                            files=[("files", ("p.jpg", photo.read_bytes()))])
    assert info["task"] == "multiclass" and info["class_names"] == sorted(CLASSES)
    assert info["positive_class"] is None and info["threshold"] is None
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["invasive"] is None and body["threshold"] is None
    assert set(body["probabilities"]) == set(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["probability"] == body["probabilities"][body["label"]]
    assert batch.json()["results"][0]["prediction"]["label"] == body["label"]
    # the service and offline predict give the same probabilities for the same file
    offline = next(r for r in predict_csv(trained) if r["name"] == "hogweed/hogweed-0")
    for name in CLASSES:
        assert body["probabilities"][name] == pytest.approx(float(offline[name]), abs=1e-5)
