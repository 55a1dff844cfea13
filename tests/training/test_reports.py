"""evaluate's and eda's extra outputs: what was scored, misclassified images, sample grid, groups,
and predict's output rule."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import sheets
from training.cli import main
from training.data import load_labelled_data
from training.evaluate import data_scope, misclassified, write_misclassified
from training.sheets import MISCLASSIFIED_LIMIT as SHEET_LIMIT


def test_scope_says_what_was_scored(tmp_path):
    config = {"data": str(tmp_path / "kaggle"), "train_size": 12, "val_size": 4}
    same = data_scope(config, tmp_path / "kaggle", 16, same=True)
    assert same.startswith(f"all 16 images under {tmp_path / 'kaggle'}, including the 4 the "
                           "checkpoint was validated on and the 12 it was trained on: an "
                           "optimistic figure")
    assert "cross-validate (fit --folds 5" in same
    changed = data_scope(config, tmp_path / "kaggle", 20, same=False)
    assert "the folder the checkpoint was trained on, but its files changed" in changed
    other = data_scope(config, tmp_path / "holdout", 9, same=False)
    assert other.startswith(f"9 images under {tmp_path / 'holdout'}, a different set from the "
                            "data the checkpoint was trained on")
    assert "it may still share photos with it" in other  # a fingerprint cannot tell more
    assert "trained on" not in data_scope({}, tmp_path, 3, same=True).split(":")[0]


def _scored(kaggle_data: Path):
    """The demo photos with made-up probabilities: 1-8 odd = negatives, even = positives."""
    data = load_labelled_data(kaggle_data)
    p = np.array([0.1] * len(data.samples))
    for i, s in enumerate(data.samples):
        if data.class_names[s.label] == "invasive":
            p[i] = 0.9
    by_name = {s.name: i for i, s in enumerate(data.samples)}
    p[by_name["1"]] = 0.95  # false positive, very sure
    p[by_name["3"]] = 0.55  # false positive, barely
    p[by_name["2"]] = 0.2  # false negative
    keep = np.ones(len(p), dtype=bool)
    keep[by_name["5"]] = False  # unreadable: never listed
    p[by_name["5"]] = 0.99
    return data, p, keep


def test_misclassified_lists_the_worst_first(kaggle_data, tmp_path):
    data, p, keep = _scored(kaggle_data)
    rows = misclassified(data, p, keep, 0.5, "invasive", "not_invasive")
    assert [(r["name"], r["error"]) for r in rows] == [
        ("1", "false positive"), ("2", "false negative"), ("3", "false positive")]
    assert rows[0]["true_class"] == "not_invasive" and rows[0]["predicted"] == "invasive"
    report = write_misclassified(rows, tmp_path, 0.5, "invasive", int(keep.sum()))
    assert report == {"count": 3, "csv": str(tmp_path / "misclassified.csv"),
                      "sheet": str(tmp_path / "misclassified.png")}
    table = list(csv.DictReader((tmp_path / "misclassified.csv").open()))
    assert [r["rank"] for r in table] == ["1", "2", "3"]
    assert table[1] == {"rank": "2", "name": "2", "true_class": "invasive",
                        "predicted": "not_invasive", "p_positive": "0.2",
                        "error": "false negative", "path": str(kaggle_data / "train" / "2.jpg")}
    sheet = Image.open(tmp_path / "misclassified.png")
    cell = sheets.THUMB + 2 * sheets.PAD
    assert sheet.size[1] == 2 * sheets.LINE + cell + 3 * sheets.LINE  # one row, 3 caption lines
    # The first tile is a photo (not background) framed red: a false positive.
    x, y = sheets.PAD, 2 * sheets.LINE + sheets.PAD
    assert sheet.getpixel((x - 2, y + 20)) == (200, 30, 30)
    assert sheet.getpixel((x + cell - 2, y + 20)) == (230, 140, 0)  # orange: false negative


def test_no_mistakes_means_an_empty_csv_and_no_sheet(kaggle_data, tmp_path):
    report = write_misclassified([], tmp_path, 0.5, "invasive", 16)
    assert report == {"count": 0, "csv": str(tmp_path / "misclassified.csv"), "sheet": None}
    assert (tmp_path / "misclassified.csv").read_text().startswith("rank,name,true_class")
    assert not (tmp_path / "misclassified.png").exists()


def test_contact_sheet_is_capped(kaggle_data, tmp_path):
    photo = kaggle_data / "train" / "1.jpg"
    rows = [{"name": f"x{i}", "true_class": "invasive", "predicted": "not_invasive",
             "p_positive": 0.1, "error": "false negative", "path": str(photo)}
            for i in range(SHEET_LIMIT + 6)]
    report = write_misclassified(rows, tmp_path, 0.5, "invasive", 100)
    assert report["count"] == SHEET_LIMIT + 6
    assert len(list(csv.DictReader((tmp_path / "misclassified.csv").open()))) == SHEET_LIMIT + 6
    width, height = Image.open(report["sheet"]).size
    cell_w = sheets.THUMB + 2 * sheets.PAD
    rows_drawn = (height - 2 * sheets.LINE) // (cell_w + 3 * sheets.LINE)
    assert rows_drawn == SHEET_LIMIT // 8 and width == 8 * cell_w


def test_an_unreadable_photo_becomes_a_grey_tile(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    tile = sheets.thumbnail(bad, 64)
    assert tile.size == (64, 64) and tile.getpixel((1, 1)) == (190, 190, 190)


def test_eda_draws_sample_photos_per_class(folder_data, tmp_path):
    out = tmp_path / "eda"
    assert main(["eda", "--data", str(folder_data), "--output", str(out), "--samples", "3"]) == 0
    grid = Image.open(out / "samples.png")
    cell = 128 + 2 * sheets.PAD
    assert grid.size == (150 + 3 * cell, 2 * sheets.LINE + 2 * cell)  # 2 classes x 3 photos
    centre = (150 + sheets.PAD + 64, 2 * sheets.LINE + sheets.PAD + 64)
    assert grid.getpixel(centre) != (255, 255, 255)  # a photo, not the background
    summary = json.loads((out / "eda.json").read_text())
    assert summary["plots"]["samples"] == str(out / "samples.png")


def test_eda_group_statistics(kaggle_data, tmp_path, capsys):
    # photo0: tiles 1-3, photo1: 4-7, photo2: 8-11, photo3: 12-15, photo4: 16. Even = invasive.
    rows = "".join(f"{n},photo{n // 4}\n" for n in range(1, 17))
    (kaggle_data / "tiles_meta.csv").write_text("name,source_image\n" + rows)
    out = tmp_path / "eda"
    assert main(["eda", "--data", str(kaggle_data), "--output", str(out), "--group-column",
                 "source_image", "--group-file", str(kaggle_data / "tiles_meta.csv"),
                 "--json"]) == 0
    captured = capsys.readouterr()
    groups = json.loads(captured.out)["groups"]
    assert groups["groups"] == 5
    assert groups["groups_per_class"] == {"not_invasive": 4, "invasive": 5}
    assert groups["images_per_group"] == {"min": 1, "median": 4, "max": 4}
    assert groups["groups_with_several_classes"] == 4
    assert groups["mixed_examples"] == ["photo0", "photo1", "photo2", "photo3"]
    assert json.loads((out / "eda.json").read_text())["groups"] == groups
    assert "  groups        5 by 'source_image'" in captured.err
    assert "  mixed         4 groups hold more than one class" in captured.err


def test_eda_group_column_from_the_labels_csv_and_its_errors(kaggle_data, tmp_path, capsys):
    labels = (kaggle_data / "train_labels.csv").read_text().splitlines()
    rows = [labels[0] + ",site"] + [f"{line},s{i % 3}" for i, line in enumerate(labels[1:])]
    (kaggle_data / "train_labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["eda", "--data", str(kaggle_data), "--output", str(tmp_path / "e"),
                 "--group-column", "site"]) == 0
    assert json.loads((tmp_path / "e" / "eda.json").read_text())["groups"]["groups"] == 3
    assert main(["eda", "--data", str(kaggle_data), "--output", str(tmp_path / "e"),
                 "--group-column", "plot"]) == 2
    assert "needs columns 'name' and 'plot'" in capsys.readouterr().err


def test_predict_needs_an_output_and_a_folder_gets_submission_csv(demo_checkpoint, kaggle_data,
                                                                  tmp_path, capsys):
    images = kaggle_data / "train"
    with pytest.raises(SystemExit) as exit:
        main(["predict", "--checkpoint", str(demo_checkpoint), "--images", str(images)])
    assert exit.value.code == 2
    assert "the following arguments are required: --output" in capsys.readouterr().err
    folder = tmp_path / "runs"
    folder.mkdir()
    assert main(["predict", "--checkpoint", str(demo_checkpoint), "--images", str(images),
                 "--output", str(folder), "--workers", "1"]) == 0
    assert (folder / "submission.csv").read_text().startswith("name,invasive\n")
    assert f"to {folder / 'submission.csv'}" in capsys.readouterr().out
