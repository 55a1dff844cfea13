"""Tiny generated datasets and a fast fit configuration for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.demo import write_demo_dataset
from training.fit import FitConfig


def tiny_config(data: Path, output: Path, **overrides) -> FitConfig:
    """A couple of seconds of CPU: 32 px, resnet18 from scratch, no worker processes; early
    stopping (patience 3, the best epoch kept), which the selection tests are about."""
    settings = dict(data=data, output=output, weights="none", image_size=32, epochs=2,
                    batch_size=8, lr=1e-3, warmup_epochs=0.0, val_fraction=0.25, workers=0,
                    patience=3)
    settings.update(overrides)
    return FitConfig(**settings)


@pytest.fixture
def kaggle_data(tmp_path: Path) -> Path:
    return write_demo_dataset(tmp_path / "kaggle", images_per_class=8, size=(48, 36))


@pytest.fixture
def folder_data(tmp_path: Path) -> Path:
    return write_demo_dataset(tmp_path / "folders", images_per_class=8, layout="folders",
                              size=(48, 36))
