"""What fit tells its user and leaves behind: start-up and end summaries, --json, train state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from training import distributed
from training.cli import main
from training.fit import fit
from training.state import load_state, state_path
from training.summary import legend, rounded

from .conftest import tiny_config

FIT = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
       "--workers", "0", "--val-fraction", "0.25", "--precision", "fp32"]


def fit_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["fit", "--data", str(data), "--output", str(out), *FIT, *extra])


def test_fit_prints_what_it_will_do_before_the_first_epoch(kaggle_data, tmp_path, capsys):
    out = tmp_path / "models" / "model.safetensors"
    assert fit_cli(kaggle_data, out) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if re.match(r"epoch +1 ", line))
    startup = "\n".join(lines[:first_epoch])
    for expected in (
        f"  data        {kaggle_data} (Kaggle layout: train/ + train_labels.csv)",
        "  images      16: not_invasive 8, invasive 8",
        "  classes     not_invasive, invasive; positive (invasive) class: invasive",
        "  split       12 train / 4 validation (25 %; hold-out, --val-fraction 0.25, seed 0)",
        "  groups      none (each image is its own group: tiles of one photo may land on both "
        "sides; see --group-column)",
        "  model       resnet18, input 32 px",
        "  weights     none: random initialisation; classifier head 'fc': 2 outputs",
        "  device      cpu, fp32",
        "  batches     8 images, 1 step per epoch; 2 epochs, the last one kept (--patience 0)",
        f"  checkpoint  {out} (the last epoch's weights)",
        f"  log         {out.with_name('model.log.jsonl')}",
        f"  train state {out.with_name('model.train-state.pt')} (for --resume after a kill; "
        "removed when the run finishes)",
    ):
        assert expected in startup, expected
    fixed = legend(multiclass=False, patience=0)
    assert lines[first_epoch - 1] == fixed  # the "*" is explained right above the epochs
    assert fixed.endswith("* = best validation ROC AUC so far; the checkpoint is saved every "
                          "epoch and the last one kept (--patience 0)")
    assert legend(multiclass=False, patience=3).endswith(
        "* = best validation ROC AUC so far, checkpoint saved")
    assert printed.count(fixed) == 1
    assert startup.index("  images ") < startup.index("  split ")  # data first: before decoding


def test_fit_ends_with_a_readable_summary(kaggle_data, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert fit_cli(kaggle_data, out) == 0
    end = capsys.readouterr().out.split("done in ", 1)[1]
    assert re.match(r"[\d.]+ s: 2 epochs, --epochs 2\n", end)
    assert re.search(r"  kept epoch  2 of 2: the last \(--patience 0\)", end)
    validation = re.search(r"  validation  4 images: ROC AUC (\S+), accuracy (\S+),", end)
    assert validation and all(re.fullmatch(r"\d\.\d{4}", v) for v in validation.groups())
    assert re.search(r"  threshold   \d\.\d{4}: maximises Youden's J", end)
    assert f"  checkpoint  {out}\n" in end
    assert f"  curves      {tmp_path / 'model.training-curves.png'}\n" in end
    assert "  train state removed" in end
    assert f"next: invasive-train evaluate --checkpoint {out}" in end
    assert (tmp_path / "model.training-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "{" not in end  # no JSON unless asked for


def test_json_is_rounded_and_names_every_file(kaggle_data, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert fit_cli(kaggle_data, out, "--json", "--keep-train-state") == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout: the JSON alone; people's text went to stderr
    assert "done in " in captured.err and legend(False, 0) in captured.err
    assert result["checkpoint"] == str(out)
    assert result["log"] == str(tmp_path / "model.log.jsonl")
    assert result["train_state"] == str(state_path(out))
    assert result["plots"] == {"training_curves": str(tmp_path / "model.training-curves.png")}
    assert result["threshold_method"] == "youden_j" and result["kept"]["epoch"] == 2
    assert result["best"]["epoch"] in (1, 2)  # the best validated epoch, kept or not
    for path in (result["checkpoint"], result["log"], result["train_state"],
                 result["plots"]["training_curves"]):
        assert Path(path).is_file()

    def floats(value):
        if isinstance(value, float):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from floats(v)
        elif isinstance(value, list):
            for v in value:
                yield from floats(v)

    assert list(floats(result)) and all(round(v, 4) == v for v in floats(result))


def test_rounded_makes_plain_json():
    value = {"auc": 0.123456789, "nan": float("nan"), "path": Path("a/b"), "n": [1, 2.00004]}
    assert rounded(value) == {"auc": 0.1235, "nan": None, "path": "a/b", "n": [1, 2.0]}
    assert json.loads(json.dumps(rounded(value)))["nan"] is None


def test_train_state_is_removed_after_a_finished_run_unless_kept(kaggle_data, tmp_path):
    removed = tmp_path / "a.safetensors"
    result = fit(tiny_config(kaggle_data, removed, epochs=1))
    assert removed.is_file() and not state_path(removed).exists()
    assert result["train_state"] is None
    kept = tmp_path / "b.safetensors"
    result = fit(tiny_config(kaggle_data, kept, epochs=1, keep_train_state=True))
    assert result["train_state"] == str(state_path(kept))
    assert load_state(state_path(kept))["epoch"] == 1
    # A kept state lets a finished run be resumed (it has nothing left to do).
    again = fit(tiny_config(kaggle_data, kept, epochs=1, resume=True))
    assert again["epochs_run"] == 1


def test_resume_of_a_finished_run_says_why_there_is_nothing(kaggle_data, tmp_path):
    from training.errors import TrainingError

    out = tmp_path / "m.safetensors"
    fit(tiny_config(kaggle_data, out, epochs=1))
    with pytest.raises(TrainingError, match="finished and removed its state; --keep-train-state"):
        fit(tiny_config(kaggle_data, out, epochs=1, resume=True))


def test_only_rank_0_prints_and_removes_the_state(kaggle_data, tmp_path, monkeypatch, capsys):
    """A rank other than 0 (faked: ``is_main`` says no, there is no process group) trains but
    neither prints, writes nor removes anything: the state file rank 0 owns survives it. The
    real two-process run is in test_distributed.py."""
    out = tmp_path / "m.safetensors"
    state_path(out).write_bytes(b"rank 0's state")
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    fit(tiny_config(kaggle_data, out, epochs=1))
    assert state_path(out).read_bytes() == b"rank 0's state"
    assert not out.exists()
    printed = capsys.readouterr().out
    assert printed == ""


def test_impossible_device_or_precision_fails_before_any_work(kaggle_data, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert fit_cli(kaggle_data, out, "--device", "cpu", "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cpu --precision fp16: fp16 is not supported on CPU")
    assert "Traceback" not in err and not out.exists()
    if not torch.cuda.is_available():
        assert fit_cli(kaggle_data, out, "--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_grouped_split_is_described(kaggle_data, tmp_path, capsys):
    rows = "".join(f"{n},photo{int(n) // 4}\n" for n in range(1, 17))
    (kaggle_data / "meta.csv").write_text("name,source_image\n" + rows)
    out = tmp_path / "m.safetensors"
    assert fit_cli(kaggle_data, out, "--epochs", "1", "--group-column", "source_image",
                   "--group-file", str(kaggle_data / "meta.csv")) == 0
    printed = capsys.readouterr().out
    groups = re.search(r"  groups      by 'source_image' from (\S+): (\d) train / (\d) validation "
                       r"groups, none on both sides", printed)
    assert groups and groups.group(1) == str(kaggle_data / "meta.csv")
    assert int(groups.group(2)) + int(groups.group(3)) == 5  # photo0 ... photo4


def test_cross_validation_keeps_fold_states_until_all_folds_finish(kaggle_data, tmp_path,
                                                                   capsys):
    class Killed(Exception):
        pass

    def kill_in_fold_2(epoch, record):
        if record["fold"] == 2:
            raise Killed

    out = tmp_path / "cv"
    config = tiny_config(kaggle_data, out, epochs=2, patience=5, folds=2)
    with pytest.raises(Killed):
        fit(config, on_epoch_end=kill_in_fold_2)
    assert state_path(out / "fold1.safetensors").is_file()  # fold 1 is done: --resume skips it
    config.resume = True
    seen = []
    summary = fit(config, on_epoch_end=lambda epoch, record: seen.append(record["fold"]))
    assert seen == [2]
    assert not list(out.glob("*.train-state.pt"))
    assert summary["train_states"] == []
    assert (out / "training_curves.png").is_file()
    saved = json.loads((out / "cv.json").read_text())
    assert saved["checkpoints"] == [str(out / "fold1.safetensors"), str(out / "fold2.safetensors")]
    printed = capsys.readouterr().out
    assert printed.count("invasive-train fit\n") == 2  # once per run, not per fold
    assert re.search(r"^  split: fold 2 of 2: 8 held out \(scored once at the end\); the other "
                     r"8: 6 train / 2 validation \(25 %, --val-fraction 0.25; chooses epoch and "
                     r"threshold\), seed 0; groups: none", printed, re.M)
    assert "2-fold cross-validation" in printed
    assert re.search(r"^  ROC AUC     \d\.\d{4}, 95% interval .*: pooled out-of-fold, 16 images",
                     printed, re.M)
    assert (out / "oof_predictions.csv").is_file()


def test_weights_are_described_with_their_source_and_new_head(tmp_path):
    from safetensors.torch import save_file

    from model.architectures import build_model
    from training.weights import build_initial_model, describe_weights

    model = build_model("mobilenet_v2", 3)
    described = describe_weights("mobilenet_v2", "imagenet", model)  # reads no weights
    assert described.startswith("ImageNet, torchvision MobileNet_V2_Weights.IMAGENET1K_")
    assert described.endswith("; classifier head 'classifier.1' replaced: 3 outputs")
    path = tmp_path / "features.safetensors"
    save_file({k: v for k, v in build_model("resnet18", 1000).state_dict().items()
               if not k.startswith("fc.")}, str(path))
    loaded = build_initial_model("resnet18", 2, str(path))
    assert describe_weights("resnet18", str(path), loaded) == (
        f"{path} (every tensor but the classifier head); classifier head 'fc' replaced: "
        "2 outputs")
