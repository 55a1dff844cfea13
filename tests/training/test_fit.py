"""fit end to end on tiny generated data: checkpoint, log, resume after a kill, CV, caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, read_metadata
from training.errors import TrainingError
from training.fit import fit
from training.runlog import read_log
from training.state import state_path

from .conftest import tiny_config


class Killed(Exception):
    """Stands in for SIGKILL: the run stops between two epochs without any cleanup."""


def test_fit_writes_a_loadable_self_describing_checkpoint(kaggle_data, tmp_path):
    out = tmp_path / "models" / "model.safetensors"
    result = fit(tiny_config(kaggle_data, out))
    loaded = load_checkpoint(out)
    meta = loaded.metadata
    assert meta.arch == "resnet18" and meta.input_size == 32 and meta.demo is False
    assert meta.class_names == ["not_invasive", "invasive"]
    assert 0.0 <= meta.threshold <= 1.0
    assert meta.threshold == meta.metrics["validation"]["threshold"]
    assert meta.metrics["threshold_method"] == "youden_j"
    assert meta.training_config["epochs"] == 2 and meta.training_config["val_size"] == 4
    assert len(meta.data_fingerprint) == 64
    assert result["best"]["epoch"] in (1, 2) and result["epochs_run"] == 2
    events = read_log(tmp_path / "models" / "model.log.jsonl")
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "result"]
    epoch = events[1]
    for key in ("train_loss", "val_loss", "val_roc_auc", "val_accuracy", "images_per_s",
                "epoch_s", "data_s", "compute_s"):
        assert key in epoch


def test_fit_on_class_folders_with_three_classes(folder_data, tmp_path):
    (folder_data / "other").mkdir()
    for p in list((folder_data / "not_invasive").iterdir())[:4]:
        p.rename(folder_data / "other" / p.name)
    out = tmp_path / "m.safetensors"
    fit(tiny_config(folder_data, out, epochs=1))
    meta = read_metadata(out)
    assert meta.class_names == ["invasive", "not_invasive", "other"]
    assert meta.positive_class == "invasive"
    assert load_checkpoint(out).model.fc.out_features == 3


def test_resume_after_a_kill_finishes_like_an_uninterrupted_run(kaggle_data, tmp_path):
    def kill_after_first(epoch, record):
        if epoch == 1:
            raise Killed

    killed = tmp_path / "killed.safetensors"
    config = tiny_config(kaggle_data, killed, epochs=3, patience=5)
    with pytest.raises(Killed):
        fit(config, on_epoch_end=kill_after_first)
    assert state_path(killed).is_file()
    config.resume = True
    epochs_seen = []
    resumed = fit(config, on_epoch_end=lambda epoch, record: epochs_seen.append(epoch))
    assert epochs_seen == [2, 3]
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert not state_path(killed).exists()  # finished: the state that made the resume is gone

    straight = fit(tiny_config(kaggle_data, tmp_path / "straight.safetensors", epochs=3,
                               patience=5))
    for a, b in zip(resumed["history"], straight["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3, abs=1e-4)
    same = load_checkpoint(killed).model.state_dict()
    other = load_checkpoint(tmp_path / "straight.safetensors").model.state_dict()
    assert all(torch.allclose(same[k].float(), other[k].float(), atol=1e-4) for k in same)


def test_resume_refuses_other_options_or_no_state(kaggle_data, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingError, match="nothing to resume"):
        fit(tiny_config(kaggle_data, out, resume=True))
    fit(tiny_config(kaggle_data, out, epochs=1, keep_train_state=True))
    with pytest.raises(TrainingError, match="--image-size 32, this run has 48"):
        fit(tiny_config(kaggle_data, out, epochs=1, image_size=48, resume=True))


def test_grouped_cross_validation_reports_mean_and_sd(kaggle_data, tmp_path):
    names = [p.stem for p in (kaggle_data / "train").iterdir()]
    # 8 photos of 2 tiles: enough groups for each fold's inner validation split (see test_cv.py)
    rows = "".join(f"{n},g{(int(n) - 1) // 2}\n" for n in names)
    (kaggle_data / "meta.csv").write_text("name,source_image\n" + rows)
    out = tmp_path / "cv"
    summary = fit(tiny_config(kaggle_data, out, epochs=1, folds=2, group_column="source_image",
                              group_file=kaggle_data / "meta.csv"))
    assert len(summary["roc_auc_per_fold"]) == 2
    assert summary["roc_auc_sd"] >= 0.0
    saved = json.loads((out / "cv.json").read_text())
    assert saved["roc_auc_mean"] == pytest.approx(summary["roc_auc_mean"])
    assert (out / "fold1.safetensors").is_file() and (out / "fold2.safetensors").is_file()
    assert not list(out.glob("*.train-state.pt")) and (out / "training_curves.png").is_file()
    held_out = [f["held_out_size"] for f in saved["folds_detail"]]
    assert sum(held_out) == 16  # every image held out exactly once
    assert saved["roc_auc_oof"] == pytest.approx(summary["roc_auc_oof"])


def test_disk_cache_is_reused_and_no_cache_path_trains(kaggle_data, tmp_path):
    cache = tmp_path / "cache"
    fit(tiny_config(kaggle_data, tmp_path / "a.safetensors", epochs=1, cache="disk",
                    cache_dir=cache))
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and any(f.endswith(".npy") for f in files)
    stamp = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    fit(tiny_config(kaggle_data, tmp_path / "b.safetensors", epochs=1, cache="disk",
                    cache_dir=cache))
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamp
    fit(tiny_config(kaggle_data, tmp_path / "c.safetensors", epochs=1, cache="none"))
    assert read_metadata(tmp_path / "c.safetensors").training_config["cache"] == "none"


def test_disk_cache_defaults_to_the_user_cache_not_the_data_folder(kaggle_data, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fit(tiny_config(kaggle_data, tmp_path / "a.safetensors", epochs=1, cache="disk"))
    cached = list((tmp_path / "xdg" / "invasive-species" / "decode-cache").glob("*.npy"))
    assert len(cached) == 1
    assert not (Path(kaggle_data) / ".decode-cache").exists()


def test_unwritable_disk_cache_is_one_clear_error(kaggle_data, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(TrainingError, match="cannot write the decode cache.*--cache-dir"):
        fit(tiny_config(kaggle_data, tmp_path / "a.safetensors", epochs=1, cache="disk",
                        cache_dir=blocker / "cache"))
