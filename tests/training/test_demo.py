"""The demo checkpoint: built by the real fit code, loadable, and it learned the toy task."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model.checkpoint import load_checkpoint, read_metadata
from model.inference import Classifier
from model.preprocessing import prepare_input
from training.cli import main
from training.demo import make_demo_photo


def test_demo_checkpoint_is_a_loadable_demo(demo_checkpoint):
    meta = read_metadata(demo_checkpoint)
    assert meta.demo is True
    assert meta.class_names == ["not_invasive", "invasive"] and meta.positive_class == "invasive"
    assert meta.input_size == 64
    assert meta.data_fingerprint and len(meta.data_fingerprint) == 64
    assert "roc_auc" in meta.metrics["validation"]
    assert load_checkpoint(demo_checkpoint).metadata == meta
    assert not demo_checkpoint.with_name("demo.train-state.pt").exists()


def test_demo_checkpoint_tells_the_classes_apart(demo_checkpoint, tmp_path):
    clf = Classifier.from_checkpoint(demo_checkpoint, device="cpu")
    rng = np.random.default_rng(123)
    scores = {}
    for invasive in (False, True):
        tensors = []
        for i in range(6):
            path = tmp_path / f"{invasive}-{i}.jpg"
            make_demo_photo(invasive, rng).save(path)
            tensors.append(prepare_input(path, clf.spec))
        probs = clf.predict_probabilities(torch.stack(tensors))
        scores[invasive] = probs[:, clf.metadata.positive_index]
    auc = roc_auc_score([0] * 6 + [1] * 6, np.concatenate([scores[False], scores[True]]))
    assert auc >= 0.8, f"demo model barely separates the classes: ROC AUC {auc:.2f}"


def test_demo_command_writes_checkpoint(tmp_path, capsys):
    out = tmp_path / "m" / "model.safetensors"
    assert main(["demo", "--output", str(out), "--image-size", "32", "--epochs", "1"]) == 0
    assert read_metadata(out).input_size == 32
    assert "demo checkpoint written" in capsys.readouterr().out
