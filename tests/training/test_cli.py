"""The invasive-train commands as a user runs them: predict CSV, evaluate, eda, fit, errors."""

from __future__ import annotations

import csv
import json

import pytest

from model.checkpoint import read_metadata
from training.cli import main
from training.predict import natural_key


def test_predict_writes_a_kaggle_submission(demo_checkpoint, kaggle_data, tmp_path, capsys):
    images = kaggle_data / "train"
    (images / "100.jpg").write_bytes((images / "1.jpg").read_bytes())
    out = tmp_path / "sub" / "submission.csv"
    code = main(["predict", "--checkpoint", str(demo_checkpoint), "--images", str(images),
                 "--output", str(out), "--tta", "--workers", "1"])
    assert code == 0
    text = out.read_text()
    assert text.startswith("name,invasive\n")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 17
    names = [r["name"] for r in rows]
    assert names == sorted(names, key=natural_key) and names[:3] == ["1", "2", "3"]
    assert all(0.0 <= float(r["invasive"]) <= 1.0 for r in rows)
    assert "wrote 17 predictions" in capsys.readouterr().out


def test_predict_unreadable_image_is_an_error_unless_skipped(demo_checkpoint, kaggle_data,
                                                            tmp_path, capsys):
    (kaggle_data / "train" / "4.jpg").write_bytes(b"garbage")
    args = ["predict", "--checkpoint", str(demo_checkpoint), "--images",
            str(kaggle_data / "train"), "--output", str(tmp_path / "s.csv")]
    assert main(args) == 2
    assert "unreadable images (1): 4.jpg" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    assert main([*args, "--skip-bad"]) == 0
    assert len(list(csv.DictReader((tmp_path / "s.csv").open()))) == 15


def test_evaluate_writes_metrics_and_plots(demo_checkpoint, kaggle_data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(demo_checkpoint), "--data", str(kaggle_data),
                 "--output", str(out), "--workers", "1"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["count"] == 16
    assert report["threshold"] == pytest.approx(read_metadata(demo_checkpoint).threshold)
    assert sum(report["confusion"].values()) == 16
    assert 0.0 <= report["roc_auc"] <= 1.0
    for png in ("roc.png", "precision_recall.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = report["confusion"]["fp"] + report["confusion"]["fn"]
    rows = list(csv.DictReader((out / "misclassified.csv").open()))
    assert len(rows) == report["misclassified"]["count"] == wrong
    assert (out / "misclassified.png").is_file() == (wrong > 0)
    # The demo checkpoint was trained on photos generated elsewhere: the report says so.
    assert report["same_data_as_training"] is False
    assert report["scope"].startswith(f"16 images under {kaggle_data}, a different set")
    printed = capsys.readouterr().out
    assert f"misclassified    {wrong}: {out / 'misclassified.csv'}" in printed
    assert f"precision-recall {out / 'precision_recall.png'}" in printed


def test_fit_then_evaluate_draws_training_curves(kaggle_data, tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    assert main(["fit", "--data", str(kaggle_data), "--output", str(ckpt), "--weights", "none",
                 "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--val-fraction", "0.25", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # with --json, stdout is the JSON alone
    assert summary["epochs_run"] == 1 and summary["checkpoint"] == str(ckpt)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(kaggle_data), "--output",
                 str(out), "--workers", "0"]) == 0
    assert (out / "training_curves.png").is_file()
    report = json.loads((out / "metrics.json").read_text())
    assert report["same_data_as_training"] is True
    scope = (f"all 16 images under {kaggle_data}, including the 4 the checkpoint was validated "
             "on and the 12 it was trained on: an optimistic figure")
    assert report["scope"].startswith(scope)
    assert scope in capsys.readouterr().out


def test_eda_summarises_classes_and_sizes(folder_data, tmp_path, capsys):
    out = tmp_path / "eda"
    assert main(["eda", "--data", str(folder_data), "--output", str(out)]) == 0
    summary = json.loads((out / "eda.json").read_text())
    assert summary["classes"] == {"invasive": 8, "not_invasive": 8}
    assert summary["width"] == {"min": 48, "median": 48, "max": 48}
    assert summary["formats"] == {"JPEG": 16}
    assert (out / "class_balance.png").is_file()
    assert "groups" not in summary  # no --group-column
    printed = capsys.readouterr().out
    assert "  images        16: invasive 8, not_invasive 8; positive class invasive" in printed
    assert f"samples       {out / 'samples.png'}" in printed


def test_bad_data_exits_2_with_the_message(kaggle_data, tmp_path, capsys):
    (kaggle_data / "train_labels.csv").write_text("name,invasive\n1,0\n2,5\n")
    code = main(["fit", "--data", str(kaggle_data), "--output", str(tmp_path / "m.safetensors"),
                 "--weights", "none"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad labels (1): '2'='5'" in err
    assert "Traceback" not in err


def test_evaluate_refuses_a_positive_class_other_than_the_checkpoints(demo_checkpoint,
                                                                     kaggle_data, tmp_path,
                                                                     capsys):
    args = ["evaluate", "--checkpoint", str(demo_checkpoint), "--data", str(kaggle_data),
            "--output", str(tmp_path / "eval"), "--workers", "1"]
    assert main([*args, "--positive-class", "not_invasive"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --positive-class 'not_invasive': this checkpoint scores "
                          "'invasive' as the positive class")
    assert "fit --positive-class not_invasive" in err and "Traceback" not in err
    assert main([*args, "--positive-class", "hogweed"]) == 2
    assert "'hogweed' is not a class of this checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()  # refused before anything was scored or written
    assert main([*args, "--positive-class", "invasive", "--json"]) == 0  # its own: accepted
    assert json.loads(capsys.readouterr().out)["count"] == 16


def test_predict_reads_nested_folders_and_names_rows_by_relative_path(demo_checkpoint,
                                                                      folder_data, tmp_path,
                                                                      capsys):
    (folder_data / "invasive" / "later").mkdir()
    (folder_data / "invasive" / "later" / "99.jpg").write_bytes(
        (folder_data / "invasive" / "2.jpg").read_bytes())
    (folder_data / ".thumbnails").mkdir()  # hidden folders are not photos to score
    (folder_data / ".thumbnails" / "1.jpg").write_bytes(b"not scored")
    out = tmp_path / "s.csv"
    assert main(["predict", "--checkpoint", str(demo_checkpoint), "--images", str(folder_data),
                 "--output", str(out), "--workers", "1"]) == 0
    names = [r["name"] for r in csv.DictReader(out.open())]
    assert len(names) == 17 and len(set(names)) == 17
    assert names[:3] == ["invasive/2", "invasive/4", "invasive/6"]  # natural order, by path
    assert "invasive/later/99" in names and "not_invasive/1" in names
    assert names == sorted(names, key=natural_key)
    (folder_data / "invasive" / "4.png").write_bytes(b"x")
    assert main(["predict", "--checkpoint", str(demo_checkpoint), "--images", str(folder_data),
                 "--output", str(out)]) == 2
    assert "names that differ only in extension (1): invasive/4" in capsys.readouterr().err


def test_output_paths_are_checked_before_scoring(demo_checkpoint, kaggle_data, tmp_path,
                                                 monkeypatch, capsys):
    """Audit: evaluate and predict scored every photo, then failed to write with a
    traceback; eda too."""
    import training.scoring

    def scored(*args, **kwargs):
        raise AssertionError("scored before the output was checked")

    monkeypatch.setattr(training.scoring, "score_files", scored)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for argv, message in (
        (["evaluate", "--checkpoint", str(demo_checkpoint), "--data", str(kaggle_data),
          "--output", str(a_file)], f"error: --output {a_file} is a file; it must be a folder"),
        (["predict", "--checkpoint", str(demo_checkpoint), "--images",
          str(kaggle_data / "train"), "--output", str(a_file / "s.csv")],
         f"error: --output {a_file / 's.csv'}: {a_file} is a file, so no folder can be made "
         "there"),
        (["eda", "--data", str(kaggle_data), "--output", str(a_file)],
         f"error: --output {a_file} is a file; it must be a folder"),
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err == message + "\n"


def test_metrics_json_has_no_nan():
    from training.evaluate import finite_or_null

    report = {"roc_auc": float("nan"), "per_class": [{"f1": float("inf")}, 0.5], "n": 3}
    assert finite_or_null(report) == {"roc_auc": None, "per_class": [{"f1": None}, 0.5], "n": 3}
    json.loads(json.dumps(finite_or_null(report), allow_nan=False))
