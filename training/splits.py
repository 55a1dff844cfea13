"""Train/validation splits that keep correlated photos together and classes balanced.

Tiles cut from one field photo (``tiles_meta.csv``'s ``source_image``) look alike; if some land in
training and others in validation, validation measures memory, not generalisation. With groups
the split is scikit-learn's ``StratifiedGroupKFold``: whole groups per fold, class ratios kept as
far as the groups allow. Without groups every photo is its own group.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from training.errors import DataError


def kfold_splits(
    labels: list[int], groups: list[str] | None, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train indices, validation indices) pairs; every sample validates exactly once."""
    y = np.asarray(labels)
    g = np.asarray(groups if groups is not None else [str(i) for i in range(len(y))])
    n_groups = len(np.unique(g))
    if folds < 2 or n_groups < folds:
        raise DataError(f"cannot make {folds} folds from {n_groups} groups of images")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y, g)]


def holdout_split(
    labels: list[int], groups: list[str] | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One split with about ``val_fraction`` of the images (whole groups) in validation."""
    if not 0.0 < val_fraction < 0.5:
        raise DataError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    folds = max(2, round(1.0 / val_fraction))
    return kfold_splits(labels, groups, folds, seed)[0]
