"""What fit refuses before any work, what "*" and the kept epoch mean, and what a failed or
interrupted run leaves behind."""

from __future__ import annotations

import json
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api as tv_api

from model.checkpoint import read_metadata
from training import cv
from training import fit as fit_module
from training.cli import main
from training.errors import DataError, TrainingError
from training.fit import fit
from training.runlog import read_log
from training.state import state_path

from .conftest import tiny_config


def scripted_scores(monkeypatch, scores: list[float]) -> None:
    """Each epoch's validation ROC AUC (and so its score) is the next of ``scores``; the other
    metrics stay real."""
    real = fit_module.validation_metrics
    queue = iter(scores)

    def scripted(data, labels, probs):
        metrics, _ = real(data, labels, probs)
        auc = next(queue)
        return {**metrics, "roc_auc": auc}, auc

    monkeypatch.setattr(fit_module, "validation_metrics", scripted)


def epoch_lines(printed: str) -> dict[int, str]:
    lines = [re.match(r"epoch +(\d+)  loss .*", line) for line in printed.splitlines()]
    return {int(m.group(1)): m.group(0) for m in lines if m}


def test_fixed_schedule_stars_the_best_so_far_and_keeps_the_last(kaggle_data, tmp_path,
                                                                 monkeypatch, capsys):
    """Audit: "*" marked "better than the previous epoch" (epoch 4 here, below epoch 2), and
    the summary and --json called the kept (last) epoch the best."""
    scripted_scores(monkeypatch, [0.5, 0.8, 0.3, 0.6, 0.7])
    out = tmp_path / "m.safetensors"
    assert main(["fit", "--data", str(kaggle_data), "--output", str(out), "--weights", "none",
                 "--image-size", "32", "--epochs", "5", "--batch-size", "8", "--workers", "0",
                 "--val-fraction", "0.25", "--precision", "fp32", "--json"]) == 0
    captured = capsys.readouterr()
    stars = [e for e, line in epoch_lines(captured.err).items() if line.endswith("  *")]
    assert stars == [1, 2]  # 0.6 and 0.7 are better than the epoch before, not the best so far
    assert ("  kept epoch  5 of 5: the last (--patience 0); the best validation ROC AUC was "
            "epoch 2's (ROC AUC 0.8000), not kept") in captured.err
    result = json.loads(captured.out)
    assert result["kept"]["epoch"] == 5 and result["kept"]["roc_auc"] == 0.7
    assert result["best"]["epoch"] == 2 and result["best"]["roc_auc"] == 0.8
    assert read_metadata(out).metrics["validation"]["epoch"] == 5


def test_patience_keeps_and_stars_the_best(kaggle_data, tmp_path, monkeypatch, capsys):
    scripted_scores(monkeypatch, [0.5, 0.8, 0.3, 0.6, 0.7])
    out = tmp_path / "m.safetensors"
    result = fit(tiny_config(kaggle_data, out, epochs=5, patience=2))
    printed = capsys.readouterr().out
    assert result["epochs_run"] == 4  # 2 epochs without a better one after epoch 2
    assert [e for e, line in epoch_lines(printed).items() if line.endswith("  *")] == [1, 2]
    assert result["kept"] == result["best"] and result["kept"]["epoch"] == 2
    assert "  kept epoch  2 of 4: the best validation ROC AUC" in printed
    assert "* = best validation ROC AUC so far, checkpoint saved" in printed
    assert read_metadata(out).metrics["validation"]["epoch"] == 2


def fails_before_decode(monkeypatch) -> None:
    def decoded(*args, **kwargs):
        raise AssertionError("the photos were decoded before the mistake was found")

    monkeypatch.setattr(fit_module, "cached_decode", decoded)
    monkeypatch.setattr(fit_module, "find_unreadable", decoded)


@pytest.mark.parametrize(("settings", "message"), [
    ({"arch": "resnet999"}, "--arch resnet999: unknown architecture 'resnet999'"),
    ({"arch": "squeezenet1_0"}, "--arch squeezenet1_0: SqueezeNet has no nn.Linear classifier "
                                "head"),
    ({"arch": "vit_b_16"}, "--arch vit_b_16 does not take --image-size 32 input (Wrong image "
                           "height! Expected 224 but got 32!)"),
    ({"folds": 100}, "--folds 100: the largest class has 8 images, too few for 100 folds"),
    ({"val_fraction": 0.1}, "--val-fraction 0.1 holds out 1 part in 10 (every class spread "
                            "over the parts), which needs a class of at least 10 images; the "
                            "largest class has 8 images: use --val-fraction 0.12 or more"),
], ids=["unknown-arch", "no-linear-head", "fixed-input-size", "folds", "val-fraction"])
def test_choices_are_refused_before_the_decode(kaggle_data, tmp_path, monkeypatch, settings,
                                               message):
    """Audit: these came only after every photo was decoded (minutes on the Kaggle set)."""
    fails_before_decode(monkeypatch)
    out = tmp_path / ("cv" if "folds" in settings else "m.safetensors")
    with pytest.raises(TrainingError) as err:
        fit(tiny_config(kaggle_data, out, **settings))
    assert str(err.value).startswith(message)
    assert not out.exists()


def test_weights_are_refused_before_the_decode(kaggle_data, tmp_path, monkeypatch):
    fails_before_decode(monkeypatch)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(TrainingError, match="could not download the ImageNet weights"):
        fit(tiny_config(kaggle_data, tmp_path / "m.safetensors", weights="imagenet"))
    other = tmp_path / "mobilenet.pt"
    from model.architectures import build_model

    torch.save(build_model("mobilenet_v2", 2).state_dict(), other)
    with pytest.raises(TrainingError, match="does not fit this architecture"):
        fit(tiny_config(kaggle_data, tmp_path / "m.safetensors", weights=str(other)))


def test_a_folder_at_the_output_path_is_refused_before_training(kaggle_data, tmp_path):
    """Audit: a folder there (left by a failed --folds run) let fit train every epoch, then
    fail at the first write with an IsADirectoryError traceback."""
    out = tmp_path / "model.safetensors"
    out.mkdir()
    epochs = []
    with pytest.raises(TrainingError, match="is a folder; it must be the file to write"):
        fit(tiny_config(kaggle_data, out), on_epoch_end=lambda e, r: epochs.append(e))
    assert epochs == []
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingError, match="is a file, so no folder can be made there"):
        fit(tiny_config(kaggle_data, tmp_path / "file" / "m.safetensors"))
    with pytest.raises(TrainingError, match="--folds writes a folder"):
        fit(tiny_config(kaggle_data, tmp_path / "cv.safetensors", folds=2))
    with pytest.raises(TrainingError, match="--log .* is a folder"):
        fit(tiny_config(kaggle_data, tmp_path / "m.safetensors", log=tmp_path))


def test_a_failed_cross_validation_leaves_no_empty_folder(kaggle_data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("failed in fold 1")

    monkeypatch.setattr(cv, "train_split", broken)
    out = tmp_path / "runs" / "cv"
    with pytest.raises(RuntimeError, match="failed in fold 1"):
        fit(tiny_config(kaggle_data, out, folds=2))
    assert not out.exists()


def test_cache_none_checks_every_photo_before_training(kaggle_data, tmp_path):
    """Audit: with --cache none an unreadable photo ended epoch 1 with a worker's traceback,
    --skip-bad or not."""
    (kaggle_data / "train" / "3.jpg").write_bytes(b"not a jpeg at all")
    whole = (kaggle_data / "train" / "5.jpg").read_bytes()
    (kaggle_data / "train" / "5.jpg").write_bytes(whole[:len(whole) // 2])  # header intact
    config = tiny_config(kaggle_data, tmp_path / "m.safetensors", cache="none", epochs=1)
    with pytest.raises(DataError, match=r"unreadable images \(2\): 3 \(the file is not an "
                                        r"image.*5 \(the image could not be decoded"):
        fit(config)
    config.skip_bad = True
    result = fit(config)
    assert result["train_size"] + result["val_size"] == 14


def test_resume_refuses_another_split_or_optimiser(kaggle_data, tmp_path):
    """Audit: a resume with another --seed or --val-fraction validated on photos that had
    trained the first epochs, and one with another --lr trained otherwise, silently."""
    class Killed(Exception):
        pass

    def kill_after_first(epoch, record):
        raise Killed

    out = tmp_path / "m.safetensors"
    with pytest.raises(Killed):
        fit(tiny_config(kaggle_data, out, epochs=2), on_epoch_end=kill_after_first)
    for change, name in (({"seed": 7}, "--seed"), ({"val_fraction": 0.4}, "--val-fraction"),
                         ({"lr": 0.01}, "--lr"), ({"batch_size": 4}, "--batch-size")):
        with pytest.raises(TrainingError, match=f"was made with {name} "):
            fit(tiny_config(kaggle_data, out, epochs=2, resume=True, **change))
    assert fit(tiny_config(kaggle_data, out, epochs=2, resume=True))["epochs_run"] == 2


def test_a_new_run_starts_a_new_log(kaggle_data, tmp_path, capsys):
    """Audit: a second fit to the same path appended to the first run's log, and evaluate drew
    both runs as one curve."""
    out = tmp_path / "m.safetensors"
    fit(tiny_config(kaggle_data, out, epochs=1))
    capsys.readouterr()
    fit(tiny_config(kaggle_data, out, epochs=1))
    assert f"{out} (the best epoch's weights; replaces the file there now after epoch 1)" in (
        capsys.readouterr().out)
    events = [e["event"] for e in read_log(tmp_path / "m.log.jsonl")]
    assert events == ["start", "epoch", "result"]


def test_an_interrupt_suggests_resume_only_when_there_is_a_state(kaggle_data, tmp_path,
                                                                 monkeypatch, capsys):
    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", interrupted)
    out = tmp_path / "m.safetensors"
    args = ["fit", "--data", str(kaggle_data), "--output", str(out), "--weights", "none"]
    assert main(args) == 130
    assert "nothing to resume; run the same command again" in capsys.readouterr().err
    state_path(out).write_bytes(b"state")
    assert main(args) == 130
    assert "continue with the same command plus --resume" in capsys.readouterr().err


def test_a_gpu_index_that_does_not_exist_is_a_clear_error(monkeypatch, tmp_path):
    """cuda:N past the last GPU (torch would fail later, at the first tensor moved there)."""
    from training.config import FitConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config = FitConfig(data=tmp_path, output=tmp_path / "m.safetensors", device="cuda:3",
                       precision="fp32")
    with pytest.raises(TrainingError, match=r"--device cuda:3 --precision fp32: there is no "
                                            r"GPU 3: CUDA sees 1 GPU \(cuda:0 \.\.\.\)"):
        fit_module.runtime(config)


def test_demo_records_no_path_that_will_not_exist(tmp_path, capsys):
    """Audit: the demo printed and stored a log path in a temporary folder already deleted."""
    out = tmp_path / "models" / "model.safetensors"
    assert main(["demo", "--output", str(out), "--image-size", "32", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "invasive-demo-" not in "\n".join(
        line for line in printed.splitlines() if not line.startswith("  data "))
    config = read_metadata(out).training_config
    assert config["log"] is None and config["data"] == "generated demo photos (not kept)"
    assert "next: invasive-train evaluate" not in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.safetensors"]


def test_folds_count_names_groups_when_groups_limit(tmp_path):
    from training.demo import write_demo_dataset

    data = write_demo_dataset(tmp_path / "k", images_per_class=8, size=(48, 36))
    rows = "".join(f"{n},photo{n % 3}\n" for n in range(1, 17))
    (data / "meta.csv").write_text("name,source_image\n" + rows)
    with pytest.raises(DataError, match=r"--folds 4: there are 3 groups, too few for 4 folds .* "
                                        r"use at most --folds 3"):
        fit(tiny_config(data, tmp_path / "cv", folds=4, group_column="source_image",
                        group_file=data / "meta.csv"))
    assert not Path(tmp_path / "cv").exists()


def test_an_output_folder_this_user_cannot_write_is_refused(tmp_path, monkeypatch):
    """Audit: a read-only --output, --log, evaluate/eda folder or predict CSV failed at the first
    write (after training or scoring everything) with an OSError traceback."""
    from training import preflight

    monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)
    with pytest.raises(TrainingError, match=r"--output .*m.safetensors: permission denied "
                                            r"\(cannot create files in "):
        preflight.check_fit_output(tmp_path / "runs" / "m.safetensors", 1, None)
