"""Post-hoc changes to a finished 5-fold CV, scored on the same out-of-fold predictions (issue 12).

Not a test. Takes the fold checkpoints of ``invasive-train fit --folds 5 --group-column
source_image`` (``--cv-dir``) and re-scores every held-out fold, four ways:

- ``raw``: as ``fit`` scored it (the pooled out-of-fold ROC AUC it reported);
- ``platt``: each fold model's probabilities recalibrated by Platt scaling (a logistic
  regression on the logit) fitted on that fold's *inner* validation split, the split that chose
  its threshold. The pooled figure ranks five models' scores on one scale, so it charges their
  differences in calibration; this asks how much of the gap to the per-fold mean that is;
- ``temperature``: the same with one temperature per fold (no bias);
- ``flip_tta``: the mean of the photo's and its mirror image's probabilities.

Nothing is chosen on the held-out folds. The folds are rebuilt by ``training.cv.plan_folds`` from
the same data, seed and settings, so they are the CV's own.

    .venv/bin/python benchmarks/train_posthoc.py --cv-dir runs/cv-m4 \\
        --out benchmarks/results/posthoc-m4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.checkpoint import load_checkpoint  # noqa: E402
from training.config import FitConfig  # noqa: E402
from training.cv import plan_folds, score_held_out  # noqa: E402
from training.data import load_labelled_data  # noqa: E402
from training.fit import prepare_data, split_images  # noqa: E402
from training.loop import score_with_classifier  # noqa: E402
from training.oof import grouped_bootstrap_auc  # noqa: E402


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the log loss of ``sigmoid(z / T)`` (grid over e^-3..e^3)."""
    grid = np.exp(np.linspace(-3, 3, 601))
    sign = 2 * y - 1
    return float(grid[np.argmin([np.mean(np.logaddexp(0, -sign * z / t)) for t in grid])])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-dir", type=Path, required=True,
                        help="the --output folder of fit --folds (fold<k>.safetensors, cv.json)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cv = json.loads((args.cv_dir / "cv.json").read_text())
    meta = cv["config"]
    config = FitConfig(data=Path(meta["data"]), output=args.cv_dir, arch=meta["arch"],
                       weights=meta["weights"], image_size=meta["image_size"],
                       folds=meta["folds"], group_column=meta["group_column"],
                       group_file=meta["group_file"] and Path(meta["group_file"]),
                       val_fraction=meta["val_fraction"], seed=meta["seed"], workers=2)
    data = load_labelled_data(config.data, positive_class=config.positive_class)
    prepared = prepare_data(config, data=data)
    y = (np.asarray(data.labels) == data.positive_index).astype(int)
    scored = {name: np.full(len(y), np.nan) for name in ("raw", "platt", "temperature",
                                                         "flip_tta")}
    folds = []
    for k, (_, select_idx, held_idx) in enumerate(
            plan_folds(config, data.labels, prepared.groups), start=1):
        checkpoint = args.cv_dir / f"fold{k}.safetensors"
        p_held = score_held_out(config, prepared, checkpoint, held_idx)
        p_select = score_held_out(config, prepared, checkpoint, select_idx)
        scored["raw"][held_idx] = p_held
        platt = LogisticRegression(C=1e6).fit(logit(p_select)[:, None], y[select_idx])
        scored["platt"][held_idx] = platt.predict_proba(logit(p_held)[:, None])[:, 1]
        t = temperature(logit(p_select), y[select_idx])
        scored["temperature"][held_idx] = 1 / (1 + np.exp(-logit(p_held) / t))
        loaded = load_checkpoint(checkpoint)
        model = loaded.model.to(memory_format=torch.channels_last)
        images = split_images(prepared, held_idx, config.workers)
        both = [score_with_classifier(model, loaded.metadata, x, device=torch.device("cpu"),
                                      precision="bf16")[:, data.positive_index]
                for x in (images, images.flip(-1))]
        scored["flip_tta"][held_idx] = (both[0] + both[1]) / 2
        fold = {"fold": k, "held_out_roc_auc": roc_auc_score(y[held_idx], p_held),
                "inner_roc_auc": roc_auc_score(y[select_idx], p_select),
                "platt": [float(platt.coef_[0][0]), float(platt.intercept_[0])],
                "temperature": t}
        folds.append(fold)
        print(json.dumps(fold), flush=True)
    figures = {}
    for name, p in scored.items():
        interval = grouped_bootstrap_auc(y, p, prepared.groups or [s.name for s in data.samples])
        figures[name] = {"roc_auc_oof": roc_auc_score(y, p),
                         "interval": [interval["low"], interval["high"]]}
        print(f"{name:12s} pooled OOF {figures[name]['roc_auc_oof']:.4f} "
              f"({interval['low']:.3f}-{interval['high']:.3f})", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "posthoc.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "cv_dir": str(args.cv_dir), "folds": folds,
         "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
