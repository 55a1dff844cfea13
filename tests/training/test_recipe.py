"""Pieces of the recipe: augmentation, schedule, threshold choice, grouped splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.augment import augment_batch
from training.metrics import binary_metrics, youden_threshold
from training.optim import build_optimizer, build_schedule
from training.splits import holdout_split, kfold_splits


def test_augmentation_keeps_shape_range_and_varies_per_image():
    batch = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(6, 1, 1, 1)
    out = augment_batch(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not torch.allclose(out[0], out[1])  # each image gets its own crop and jitter
    again = augment_batch(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_warmup_then_cosine_schedule():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # no decay on the bias
    schedule = build_schedule(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] < 0.1


def test_youden_threshold_separates_and_metrics_count():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    threshold = youden_threshold(y, p)
    assert 0.35 < threshold <= 0.4
    m = binary_metrics(y, p, threshold)
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 1.0
    assert m["confusion"] == {"tn": 3, "fp": 0, "fn": 0, "tp": 3}
    m = binary_metrics(y, p, 0.5)
    assert m["confusion"]["fn"] == 1 and m["recall"] == pytest.approx(2 / 3)


def test_grouped_splits_never_straddle_and_cover_everything():
    labels = [i % 2 for i in range(40)]
    groups = [f"photo{i // 4}" for i in range(40)]
    seen = []
    for train, val in kfold_splits(labels, groups, folds=5, seed=0):
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        seen.extend(val.tolist())
    assert sorted(seen) == list(range(40))
    train, val = holdout_split(labels, groups, 0.2, seed=0)
    assert len(val) == 8 and not {groups[i] for i in train} & {groups[i] for i in val}
