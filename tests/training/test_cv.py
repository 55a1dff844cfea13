"""Grouped cross-validation: out-of-fold predictions, the pooled ROC AUC and its interval, and
proof that the held-out fold never chooses anything (epoch, early stop, threshold)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.checkpoint import read_metadata
from training import cv
from training import fit as fit_module
from training.demo import write_demo_dataset
from training.errors import DataError
from training.fit import fit
from training.metrics import youden_threshold
from training.oof import OOF_COLUMNS, grouped_bootstrap_auc

from .conftest import tiny_config


def _grouped_data(root: Path, group_of) -> Path:
    data = write_demo_dataset(root, images_per_class=8, size=(48, 36))
    rows = "".join(f"{n},{group_of(n)}\n" for n in range(1, 17))
    (data / "meta.csv").write_text("name,source_image\n" + rows)
    return data


def _spied_cv(root: Path, **knobs) -> dict:
    """A 2-fold CV on 16 generated photos in 8 groups of 2 (one of each class per group), with
    spies on what training validates on and what the held-out scoring sees."""
    data = _grouped_data(root / "kaggle", lambda n: f"photo{(n - 1) // 2}")
    calls: dict[str, list] = {"train_split": [], "validated": [], "held_out": []}
    real_train_split, real_split_images = cv.train_split, fit_module.split_images
    real_score = cv.score_held_out

    def train_split_spy(config, prepared, train_idx, val_idx, output, log, **kw):
        calls["train_split"].append((train_idx.copy(), val_idx.copy(), kw["held_out"].copy()))
        return real_train_split(config, prepared, train_idx, val_idx, output, log, **kw)

    def split_images_spy(prepared, idx, threads):  # what train_split scores each epoch
        calls["validated"].append(np.asarray(idx).copy())
        return real_split_images(prepared, idx, threads)

    def score_spy(config, prepared, checkpoint, held_idx):
        calls["held_out"].append((checkpoint, held_idx.copy()))
        return real_score(config, prepared, checkpoint, held_idx)

    out = root / "cv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cv, "train_split", train_split_spy)
        mp.setattr(fit_module, "split_images", split_images_spy)
        mp.setattr(cv, "score_held_out", score_spy)
        summary = fit(tiny_config(data, out, epochs=2, folds=2, group_column="source_image",
                                  group_file=data / "meta.csv", **knobs))
    rows = list(csv.DictReader((out / "oof_predictions.csv").open()))
    return {"data": data, "out": out, "summary": summary, "rows": rows, "calls": calls,
            "saved": json.loads((out / "cv.json").read_text())}


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """Early stopping (--patience 5): each fold holds out an inner validation split."""
    return _spied_cv(tmp_path_factory.mktemp("cv"), patience=5)


def test_oof_csv_has_every_image_once_and_folds_keep_groups_whole(cv_run):
    rows = cv_run["rows"]
    assert list(rows[0]) == OOF_COLUMNS
    assert sorted(int(r["name"]) for r in rows) == list(range(1, 17))  # every image exactly once
    assert {r["fold"] for r in rows} == {"1", "2"}
    folds_of_group: dict[str, set[str]] = {}
    for r in rows:
        folds_of_group.setdefault(r["group"], set()).add(r["fold"])
        assert r["group"] == f"photo{(int(r['name']) - 1) // 2}"
        assert r["label"] == str(int(r["class"] == "invasive"))
        assert r["label"] == str(int(int(r["name"]) % 2 == 0))  # the demo data: even = invasive
        assert 0.0 <= float(r["probability"]) <= 1.0
    assert all(len(folds) == 1 for folds in folds_of_group.values())
    assert len(folds_of_group) == 8
    # Each row's fold is the fold whose model scored it.
    held = {int(i) + 1: k for k, (_, idx) in enumerate(cv_run["calls"]["held_out"], start=1)
            for i in idx}
    assert all(int(r["fold"]) == held[int(r["name"])] for r in rows)


def test_pooled_auc_is_roc_auc_of_the_csv_and_lies_in_its_interval(cv_run):
    rows, saved = cv_run["rows"], cv_run["saved"]
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    auc = roc_auc_score(y, p)
    assert saved["roc_auc_oof"] == pytest.approx(auc, abs=1e-12)
    assert cv_run["summary"]["roc_auc_oof"] == saved["roc_auc_oof"]
    low, high = saved["roc_auc_oof_interval"]
    assert low <= auc <= high
    interval = saved["oof"]["interval"]
    assert interval["groups"] == 8 and interval["resamples"] == 1000 and interval["level"] == 0.95
    assert 0 < interval["used"] <= 1000
    assert saved["oof"]["predictions_file"] == str(cv_run["out"] / "oof_predictions.csv")


def test_threshold_is_chosen_on_the_pooled_oof_predictions_and_says_how(cv_run):
    rows, saved = cv_run["rows"], cv_run["saved"]
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    assert saved["threshold_method"] == "youden_j" == saved["oof"]["threshold_method"]
    assert saved["threshold"] == pytest.approx(youden_threshold(y, p))
    assert "pooled out-of-fold predictions (16 images)" in saved["oof"]["threshold_chosen_on"]
    assert sum(saved["oof"]["at_threshold"]["confusion"].values()) == 16


def test_held_out_fold_never_chooses_epoch_or_threshold(cv_run):
    calls, saved = cv_run["calls"], cv_run["saved"]
    groups = [f"photo{i // 2}" for i in range(16)]  # index i = image i + 1
    assert len(calls["train_split"]) == 2
    all_held = []
    for (train_idx, val_idx, held), detail in zip(calls["train_split"], saved["folds_detail"],
                                                  strict=True):
        train, val, held = set(train_idx), set(val_idx), set(held)
        assert not train & val and not (train | val) & held
        assert train | val | held == set(range(16))
        assert not {groups[i] for i in train | val} & {groups[i] for i in held}
        assert not {groups[i] for i in train} & {groups[i] for i in val}  # inner split grouped
        assert (detail["train_size"], detail["val_size"], detail["held_out_size"]) == (
            len(train), len(val), len(held))
        all_held += sorted(held)
    assert sorted(all_held) == list(range(16))
    # Every scoring during training (early stopping, kept epoch, threshold) was on the inner
    # validation split: 2 epochs per fold, never a held-out image.
    assert len(calls["validated"]) == 4
    for k, idx in enumerate(calls["validated"]):
        assert set(idx.tolist()) == set(calls["train_split"][k // 2][1].tolist())
    # The held-out fold was scored once, by that fold's kept checkpoint, whose threshold and
    # validation metrics come from the inner validation split.
    assert [Path(c).name for c, _ in calls["held_out"]] == ["fold1.safetensors",
                                                           "fold2.safetensors"]
    for k, detail in enumerate(saved["folds_detail"], start=1):
        meta = read_metadata(cv_run["out"] / f"fold{k}.safetensors")
        assert meta.metrics["validation"]["count"] == detail["val_size"]
        assert meta.threshold == pytest.approx(detail["kept"]["threshold"])
        assert meta.training_config["held_out_size"] == detail["held_out_size"]
        assert detail["held_out"]["count"] == detail["held_out_size"]
        assert detail["held_out"]["threshold"] == pytest.approx(meta.threshold)


def test_summary_leads_with_the_oof_figure_and_labels_per_fold_ones(cv_run):
    saved = cv_run["saved"]
    assert len(saved["roc_auc_per_fold"]) == len(saved["selection_roc_auc_per_fold"]) == 2
    assert [d["held_out"]["roc_auc"] for d in saved["folds_detail"]] == pytest.approx(
        saved["roc_auc_per_fold"], nan_ok=True)
    assert "chose nothing" in saved["oof"]["selection"]


def test_printed_summary_puts_the_pooled_figure_first(cv_run, tmp_path, capsys):
    from training.summary import cv_end_lines

    config = tiny_config(cv_run["data"], tmp_path, folds=2, group_column="source_image")
    lines = cv_end_lines(config, cv_run["saved"], 1.0, {"predictions": "x.csv"})
    assert lines[1].startswith(f"  ROC AUC     {cv_run['saved']['roc_auc_oof']:.4f}, 95% "
                               "interval ")
    assert "pooled out-of-fold, 16 images" in lines[1]
    assert "bootstrap over 8 groups by 'source_image', 1000 resamples, seed 0" in lines[1]
    assert lines[2].startswith("  threshold ")
    assert "Youden's J on the pooled out-of-fold" in lines[2]
    assert lines[3].startswith("  per fold    held-out ROC AUC ")
    assert lines[4].startswith("  selection   ") and "selected on it: optimistic" in lines[4]


def test_a_fold_too_small_for_the_inner_split_fails_before_training(tmp_path):
    data = _grouped_data(tmp_path / "kaggle", lambda n: f"photo{n % 4}")  # 4 groups, 2 folds
    out = tmp_path / "cv"
    with pytest.raises(DataError) as err:  # (early stopping: the epoch needs an inner split)
        fit(tiny_config(data, out, epochs=1, folds=2, group_column="source_image",
                        group_file=data / "meta.csv"))
    # It names the flag that failed, and the --val-fraction that would work, not an internal
    # "cannot make 5 folds" (1 / --val-fraction) that the user never asked for.
    assert str(err.value) == (
        "--folds 2: fold 1's training part (8 images, 2 groups) is too small for the inner "
        "validation split that chooses the epoch and threshold: --val-fraction 0.25 holds out 1 "
        "part in 4 (whole groups, every class spread over the parts), which needs at least 4 "
        "groups and a class of at least 4 images; there are 2 groups: use --val-fraction 0.4 "
        "or more (up to 0.49), or more groups; or use fewer --folds (each fold then trains on "
        "more)")
    assert not out.exists()  # refused before the output folder was made


def test_grouped_bootstrap_resamples_groups_and_is_seeded():
    rng = np.random.default_rng(0)
    y_group = np.array([0, 1] * 20)
    score_group = y_group * 0.6 + rng.normal(0, 0.5, 40)
    # 5 near-identical tiles per photo: 200 images, 40 independent pieces of evidence.
    y = np.repeat(y_group, 5)
    p = np.repeat(score_group, 5) + rng.normal(0, 1e-3, 200)
    groups = [f"photo{i // 5}" for i in range(200)]
    auc = roc_auc_score(y, p)
    by_group = grouped_bootstrap_auc(y, p, groups, seed=1)
    by_image = grouped_bootstrap_auc(y, p, [str(i) for i in range(200)], seed=1)
    assert by_group["low"] <= auc <= by_group["high"]
    assert by_group["groups"] == 40 and by_image["groups"] == 200
    # Tiles of one photo are not independent: treating them so would understate the spread.
    assert by_group["high"] - by_group["low"] > 1.5 * (by_image["high"] - by_image["low"])
    assert grouped_bootstrap_auc(y, p, groups, seed=1) == by_group
    assert grouped_bootstrap_auc(y, p, groups, seed=2) != by_group


def test_a_fold_too_small_for_an_inner_split_trains_under_the_fixed_schedule(tmp_path):
    """The fixed schedule needs no inner split, so the folds that refused above train."""
    data = _grouped_data(tmp_path / "kaggle", lambda n: f"photo{n % 4}")
    summary = fit(tiny_config(data, tmp_path / "cv", epochs=1, folds=2, patience=0,
                              group_column="source_image", group_file=data / "meta.csv"))
    assert summary["inner_split"] is False and len(summary["roc_auc_per_fold"]) == 2


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """The fixed schedule (--patience 0): no inner validation split; with --ensemble."""
    return _spied_cv(tmp_path_factory.mktemp("cv-whole"), patience=0, ensemble=True)


def test_fixed_schedule_folds_train_on_all_of_their_training_part(whole_run):
    calls, saved = whole_run["calls"], whole_run["saved"]
    for (train_idx, val_idx, held), detail in zip(calls["train_split"], saved["folds_detail"],
                                                  strict=True):
        assert len(val_idx) == 0
        assert set(train_idx) | set(held) == set(range(16))
        assert not set(train_idx) & set(held)
        assert (detail["train_size"], detail["val_size"]) == (len(train_idx), 0)
    assert calls["validated"] == []  # nothing scored during training: nothing to choose
    assert saved["inner_split"] is False
    assert saved["kept_epochs"] == saved["best_epochs"] == [2, 2]  # the last epoch
    assert saved["selection_roc_auc_per_fold"] == [None, None]
    assert "trained on all of its training part" in saved["oof"]["selection"]
    assert (whole_run["out"] / "training_curves.png").stat().st_size > 0


def test_fixed_schedule_fold_thresholds_come_from_the_other_folds(whole_run):
    """Fold k's checkpoint threshold maximises Youden's J on the out-of-fold predictions of the
    other folds, never on its own held-out photos; its held-out figures are taken there."""
    rows, saved = whole_run["rows"], whole_run["saved"]
    fold = np.array([int(r["fold"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    for k, detail in enumerate(saved["folds_detail"], start=1):
        expected = youden_threshold(y[fold != k], p[fold != k])
        meta = read_metadata(whole_run["out"] / f"fold{k}.safetensors")
        assert meta.threshold == pytest.approx(expected)
        assert meta.metrics["threshold_method"] == "youden_j"
        assert "out-of-fold predictions of the other 1 folds (8 images" in \
            meta.metrics["threshold_chosen_on"]
        assert meta.metrics["validation"] is None
        assert detail["held_out"]["threshold"] == pytest.approx(expected)
        assert detail["held_out"]["count"] == 8


def test_fixed_schedule_ensemble_holds_the_folds_and_the_pooled_threshold(whole_run):
    """The default way a user builds an ensemble: its members trained without inner splits."""
    saved = whole_run["saved"]
    meta = read_metadata(whole_run["out"] / "ensemble.safetensors")
    assert meta.ensemble.members == 2
    assert meta.threshold == pytest.approx(saved["threshold"])  # pooled out-of-fold
    assert [m["held_out_roc_auc"] for m in meta.ensemble.member_info] == pytest.approx(
        saved["roc_auc_per_fold"], nan_ok=True)
    assert [m["epoch"] for m in meta.ensemble.member_info] == [2, 2]


def test_fixed_schedule_summary_says_no_inner_split(whole_run, tmp_path, capsys):
    from training.summary import cv_end_lines

    config = tiny_config(whole_run["data"], tmp_path, folds=2, patience=0,
                         group_column="source_image")
    lines = cv_end_lines(config, whole_run["saved"], 1.0, {})
    selection = next(line for line in lines if line.startswith("  selection"))
    assert "each fold trained on all of its training part" in selection
    assert "other folds' out-of-fold predictions" in selection


def test_fixed_schedule_fold_line_says_all_of_the_rest_trains(tmp_path):
    from training.summary import split_rows

    config = tiny_config(tmp_path, tmp_path, folds=5, patience=0, group_column="g")
    groups = [f"g{i // 2}" for i in range(10)]
    rows = dict(split_rows(config, groups, np.arange(8), np.zeros(0, dtype=int), 1,
                           held_out=np.arange(8, 10)))
    assert rows["split"].startswith("fold 1 of 5: 2 held out (scored once at the end); the "
                                    "other 8 all train (fixed schedule")
    assert "4 train / 1 held-out groups" in rows["groups"]
    from training.summary import legend

    assert legend(False, 0, validated=False).startswith(
        "per epoch: training loss, training images/s, seconds (no validation split)")
    assert "validation" in legend(False, 0)


def test_resume_refuses_a_fold_state_made_with_the_other_split(tmp_path):
    data = _grouped_data(tmp_path / "kaggle", lambda n: f"photo{(n - 1) // 2}")
    out = tmp_path / "cv"
    knobs = dict(epochs=1, patience=0, folds=2, group_column="source_image",
                 group_file=data / "meta.csv", keep_train_state=True)
    fit(tiny_config(data, out, fold_inner_split=True, **knobs))
    from training.errors import TrainingError

    with pytest.raises(TrainingError, match="an inner validation split in each fold"):
        fit(tiny_config(data, out, resume=True, **knobs))
