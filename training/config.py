"""``FitConfig``: every knob of a training run, and the files a run writes beside its checkpoint.

Kept free of torch (and of anything that imports it) so ``invasive-train --help`` can read the
defaults without paying for the import: ``training.cli`` builds its flags from this dataclass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class FitConfig:
    """Every knob of a training run; the defaults are the recipe of docs/benchmarks.md."""

    data: Path
    output: Path
    arch: str = "resnet18"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a state dict
    # None: the default for the weights, pretrained or from scratch (see recipe_for_weights)
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float | None = None
    schedule: str = "cosine"
    patience: int = 0  # epochs without a better validation ROC AUC before stopping; 0: never
    # stop, keep the last epoch (a fixed schedule: the default, docs/benchmarks.md row m1/r1)
    ema_decay: float = 0.0  # per-step decay of an exponential moving average of the weights,
    # validated and saved instead of the raw weights; 0: off
    label_smoothing: float = 0.0  # cross-entropy label smoothing; 0: off
    mixup: float = 0.0  # mixup's Beta(alpha, alpha) for blending pairs of training images; 0: off
    freeze_epochs: float = 0.0  # pretrained weights: train only the classifier head this long
    backbone_lr_scale: float = 1.0  # pretrained weights: backbone peak LR = lr * this
    augment: str = "field"  # "field" (up stays up) or "aerial" (any flip or quarter turn)
    seed: int = 0
    val_fraction: float = 0.2
    folds: int = 1  # > 1: k-fold cross-validation (see training.cv)
    # Cross-validation: hold out an inner validation split of each fold's training part (which
    # chooses epoch and threshold). None: only when --patience needs it to choose the epoch;
    # under the fixed schedule each fold trains on all of its training part (training.cv).
    fold_inner_split: bool | None = None
    ensemble: bool = False  # with folds > 1: also write the k fold models as one checkpoint
    group_column: str | None = None
    group_file: Path | None = None
    positive_class: str | None = None
    skip_bad: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2  # DataLoader worker processes, and threads for the one-off decode
    cache: str = "memory"  # "memory", "disk" (in cache_dir) or "none" (decode every epoch)
    cache_dir: Path | None = None
    resume: bool = False
    log: Path | None = None
    demo: bool = False
    sync_bn: bool | None = None  # DDP: SyncBatchNorm; None = on with CUDA (none exists for CPU)
    dist_timeout: float = 1800.0  # DDP: seconds a rank waits for the others before failing
    keep_train_state: bool = False  # keep <checkpoint>.train-state.pt after a finished run

    def __post_init__(self) -> None:
        defaults = recipe_for_weights(self.weights)
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def inner_split_per_fold(self) -> bool:
        """Cross-validation: whether each fold holds out an inner validation split (see
        ``fold_inner_split``)."""
        return self.patience > 0 if self.fold_inner_split is None else self.fold_inner_split

    def as_metadata(self) -> dict[str, Any]:
        skip = {"resume", "output", "cache_dir", "keep_train_state"}
        metadata = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()
                    if k not in skip}
        if self.demo:  # its photos are generated into a temporary folder, gone once it is built
            metadata["data"] = "generated demo photos (not kept)"
        return metadata


# The defaults that depend on the weights, chosen by pooled out-of-fold ROC AUC on hogweed-dev
# (docs/benchmarks.md, "Training recipe"). Pretrained mobilenet_v2 gained at 224 px (row m4:
# 0.970 vs 0.961 at 160); resnet18 from scratch did not (r7: 0.908 vs 0.910, at twice the CPU)
# but gained from a longer schedule (r4: 20 epochs with 2 of warm-up, 0.939 vs 0.910).
PRETRAINED_RECIPE = {"image_size": 224, "epochs": 10, "warmup_epochs": 1.0}
SCRATCH_RECIPE = {"image_size": 160, "epochs": 20, "warmup_epochs": 2.0}


def recipe_for_weights(weights: str) -> dict[str, Any]:
    """Input size and schedule for ``--weights``: ``none`` trains from scratch, anything else
    (``imagenet``, a file) starts pretrained."""
    return dict(SCRATCH_RECIPE if str(weights) == "none" else PRETRAINED_RECIPE)


def sibling(checkpoint: Path, suffix: str) -> Path:
    """``models/model.safetensors`` + ``.log.jsonl`` -> ``models/model.log.jsonl``."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + suffix)


def log_path(config: FitConfig) -> Path:
    """The JSON-lines log of a single-split run: ``--log``, or beside the checkpoint."""
    return Path(config.log) if config.log else sibling(Path(config.output), ".log.jsonl")


def curves_path(checkpoint: Path) -> Path:
    """The training-curves PNG ``fit`` writes beside a checkpoint when it finishes."""
    return sibling(checkpoint, ".training-curves.png")
