"""Train/validation splits that keep correlated photos together and classes balanced.

Tiles cut from one field photo (``tiles_meta.csv``'s ``source_image``) look alike; if some land in
training and others in validation, validation measures memory, not generalisation. With groups
the split is scikit-learn's ``StratifiedGroupKFold``: whole groups per fold, class ratios kept as
far as the groups allow. Without groups every photo is its own group.
"""

from __future__ import annotations

from collections import Counter

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
    try:
        return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y, g)]
    except ValueError as exc:  # e.g. every class smaller than the number of folds
        raise DataError(f"cannot make {folds} folds of these images ({exc})") from None


def fold_limit(labels: list[int], groups: list[str] | None) -> tuple[int, str]:
    """The most folds these images allow, and what sets that limit, in the user's words.

    Each fold holds out whole groups (so no more folds than groups), and scikit-learn's
    stratified splitter refuses more folds than the largest class has images.
    """
    n_groups = len(set(groups)) if groups is not None else len(labels)
    largest = max(Counter(labels).values(), default=0)
    if largest < n_groups:
        return largest, f"the largest class has {largest} image{'s' * (largest != 1)}"
    return n_groups, f"there are {n_groups} groups"


def holdout_split(
    labels: list[int], groups: list[str] | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One split with about ``val_fraction`` of the images (whole groups) in validation."""
    if not 0.0 < val_fraction < 0.5:
        raise DataError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    folds = max(2, round(1.0 / val_fraction))
    limit, why = fold_limit(labels, groups)
    if limit < folds:  # said in the user's terms: kfold_splits' "folds" are an internal detail
        unit = "groups" if groups is not None else "images"
        needs = (f"at least {folds} groups and a class of at least {folds} images"
                 if groups is not None else f"a class of at least {folds} images")
        smallest = smallest_val_fraction(limit)
        fix = (f"use --val-fraction {smallest:g} or more (up to 0.49), or more {unit}"
               if smallest else f"a validation split needs more {unit}")
        how = "whole groups, " if groups is not None else ""
        raise DataError(f"--val-fraction {val_fraction:g} holds out 1 part in {folds} ({how}every "
                        f"class spread over the parts), which needs {needs}; {why}: {fix}")
    return kfold_splits(labels, groups, folds, seed)[0]


def smallest_val_fraction(limit: int) -> float | None:
    """The smallest ``--val-fraction`` (in hundredths) whose split needs no more than ``limit``
    parts (:func:`fold_limit`), or None when none does (a limit under 2)."""
    for hundredths in range(1, 50):
        if max(2, round(100 / hundredths)) <= limit:
            return hundredths / 100
    return None
