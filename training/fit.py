"""``fit``: labelled photos -> the best checkpoint (by validation ROC AUC), resumable after a kill.

The shape follows torchvision's reference ``train.py``: load the data, build the model, then
train one epoch / evaluate / keep the best, with early stopping. Details that matter here:

- photos are decoded once into the decode cache (``training.images``), unless ``cache="none"``;
- validation scores through the service's ``Classifier`` (``training.loop``), and the decision
  threshold stored in the checkpoint is the one maximising Youden's J on validation;
- shuffling and augmentation are seeded per epoch, so a resumed run repeats the epochs it
  redoes exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import CheckpointMetadata, save_checkpoint
from model.inference import resolve_device, resolve_precision
from model.preprocessing import PreprocessSpec
from training.data import LabelledData, load_groups, load_labelled_data
from training.errors import DataError, TrainingError, list_offenders
from training.images import (
    CachedImages,
    FullDecodeImages,
    cached_decode,
    decode_images,
    default_cache_dir,
)
from training.loop import score_with_classifier, train_one_epoch
from training.metrics import binary_metrics, youden_threshold
from training.optim import build_optimizer, build_schedule
from training.runlog import RunLog
from training.splits import holdout_split
from training.state import load_state, save_state, state_path
from training.weights import build_initial_model

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class FitConfig:
    """Every knob of a training run; the defaults are the recipe of docs/benchmarks.md."""

    data: Path
    output: Path
    arch: str = "resnet18"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a state dict
    image_size: int = 160
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    patience: int = 3  # epochs without a better validation ROC AUC before stopping
    seed: int = 0
    val_fraction: float = 0.2
    folds: int = 1  # > 1: k-fold cross-validation (see training.cv)
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

    def as_metadata(self) -> dict[str, Any]:
        skip = {"resume", "output", "cache_dir"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()
                if k not in skip}


@dataclass
class PreparedData:
    data: LabelledData
    groups: list[str] | None
    spec: PreprocessSpec
    images: torch.Tensor | None  # the decode cache, row i = data.samples[i]; None: no cache
    fingerprint: str


def prepare_data(config: FitConfig) -> PreparedData:
    """Index, validate and (unless ``cache="none"``) decode the dataset once."""
    data = load_labelled_data(config.data, skip_bad=config.skip_bad,
                              positive_class=config.positive_class)
    spec = PreprocessSpec(input_size=config.image_size)
    images = None
    if config.cache != "none":
        cache_dir = None
        if config.cache == "disk":
            cache_dir = config.cache_dir or default_cache_dir()
        paths = [s.path for s in data.samples]
        images, failures = cached_decode(paths, spec, threads=config.workers, cache_dir=cache_dir)
        if failures:
            bad = {data.samples[i].name: why for i, why in sorted(failures.items())}
            if not config.skip_bad:
                raise DataError(
                    f"{config.data}: the dataset has problems (pass --skip-bad to drop these "
                    f"rows and go on)\n  "
                    + list_offenders("unreadable images", [f"{n} ({w})" for n, w in bad.items()])
                )
            keep = [i for i in range(len(paths)) if i not in failures]
            images, data = images[keep], data.without(bad)
    if data.skipped:
        tqdm.write(f"--skip-bad: {list_offenders('skipped', data.skipped)}")
    groups = load_groups(data, config.group_column, config.group_file) if config.group_column \
        else None
    return PreparedData(data, groups, spec, images, data.fingerprint())


def fit(config: FitConfig, *, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Train on a hold-out split (or k folds, see ``training.cv``); returns the result summary."""
    if config.folds > 1:
        from training.cv import cross_validate

        return cross_validate(config, on_epoch_end=on_epoch_end)
    prepared = prepare_data(config)
    train_idx, val_idx = holdout_split(prepared.data.labels, prepared.groups,
                                       config.val_fraction, config.seed)
    log_path = config.log or config.output.with_name(
        config.output.name.removesuffix(".safetensors") + ".log.jsonl")
    return train_split(config, prepared, train_idx, val_idx, Path(config.output),
                       RunLog(log_path), on_epoch_end=on_epoch_end)


def train_split(
    config: FitConfig,
    prepared: PreparedData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    output: Path,
    log: RunLog,
    *,
    fold: int | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train on ``train_idx``, validate on ``val_idx``, keep the best checkpoint at ``output``."""
    data, spec = prepared.data, prepared.spec
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    model = build_initial_model(config.arch, len(data.class_names), config.weights)
    model = model.to(device, memory_format=torch.channels_last)

    labels = np.asarray(data.labels)
    train_set = train_dataset(prepared, train_idx)
    steps = len(train_set) // config.batch_size if len(train_set) > config.batch_size else 1
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    schedule = build_schedule(optimizer, steps * config.epochs,
                              round(steps * config.warmup_epochs), config.schedule)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    run_info = {"fold": fold, "device": str(device), "precision": precision,
                "train_size": len(train_idx), "val_size": len(val_idx)}
    metadata = CheckpointMetadata(
        arch=config.arch, class_names=data.class_names, positive_class=data.positive_class,
        input_size=spec.input_size, training_config={**config.as_metadata(), **run_info},
        data_fingerprint=prepared.fingerprint, demo=config.demo,
    )
    progress: dict[str, Any] = {"epoch": 0, "history": [], "best_score": -math.inf,
                                "best": None, "stale": 0}
    state_file = state_path(output)
    if config.resume and state_file.is_file():
        progress = _restore(state_file, prepared, config, model, optimizer, schedule)
        tqdm.write(f"resuming {output} after epoch {progress['epoch']}")
    elif config.resume and fold is None:
        load_state(state_file)  # raises the clear "nothing to resume" error
    else:
        log.write("start", config=config.as_metadata(), **run_info)

    is_pos = labels[val_idx] == data.positive_index
    tag = f"fold {fold} " if fold is not None else ""
    for epoch in range(progress["epoch"] + 1, config.epochs + 1):
        if progress["stale"] >= config.patience:
            break
        loader = epoch_loader(train_set, config, epoch, device)
        stats = train_one_epoch(model, loader, optimizer, schedule, device=device,
                                precision=precision, spec=spec, scaler=scaler,
                                desc=f"{tag}epoch {epoch}/{config.epochs}")
        val_start = time.perf_counter()
        val_images = _validation_images(prepared, val_idx, config.workers)
        probs = score_with_classifier(model, metadata, val_images, device=device,
                                      precision=precision)
        p_pos = probs[:, data.positive_index]
        metrics = binary_metrics(is_pos, p_pos, youden_threshold(is_pos, p_pos))
        record = {
            "fold": fold, "epoch": epoch, "train_loss": round(stats.loss, 5),
            "val_loss": round(metrics["log_loss"], 5), "val_roc_auc": metrics["roc_auc"],
            "val_accuracy": metrics["accuracy"], "threshold": metrics["threshold"],
            "images_per_s": round(stats.images_per_s, 2), "train_s": round(stats.seconds, 3),
            "data_s": round(stats.data_seconds, 3), "compute_s": round(stats.compute_seconds, 3),
            "val_s": round(time.perf_counter() - val_start, 3),
            "lr": optimizer.param_groups[0]["lr"],
        }
        record["epoch_s"] = round(record["train_s"] + record["val_s"], 3)
        score = metrics["roc_auc"] if math.isfinite(metrics["roc_auc"]) else -metrics["log_loss"]
        improved = score > progress["best_score"]
        if improved:
            progress.update(best_score=score, stale=0, best={**metrics, "epoch": epoch})
            metadata = metadata.model_copy(update={
                "threshold": metrics["threshold"],
                "metrics": {"validation": {**metrics, "epoch": epoch},
                            "threshold_method": "youden_j"},
            })
            save_checkpoint(output, model, metadata)
        else:
            progress["stale"] += 1
        progress["epoch"] = epoch
        progress["history"].append(record)
        log.write("epoch", **record)
        tqdm.write(
            f"{tag}epoch {epoch:>3}  loss {stats.loss:.4f}  val_loss {metrics['log_loss']:.4f}  "
            f"val_auc {metrics['roc_auc']:.4f}  val_acc {metrics['accuracy']:.3f}  "
            f"{stats.images_per_s:6.1f} img/s  {record['epoch_s']:.1f}s"
            + ("  *" if improved else "")
        )
        save_state(state_file, _snapshot(progress, prepared, config, model, optimizer, schedule))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    result = {"checkpoint": str(output), "fold": fold, "best": progress["best"],
              "epochs_run": progress["epoch"], "history": progress["history"], **run_info}
    log.write("result", **{k: v for k, v in result.items() if k != "history"})
    return result


def epoch_loader(train_set, config: FitConfig, epoch: int, device: torch.device) -> DataLoader:
    """This epoch's shuffled batches; order and augmentation are seeded by (seed, epoch)."""
    torch.manual_seed(config.seed * 1000 + epoch)  # augmentation, reproducible on resume
    return DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(config.seed * 1000 + epoch),
        # Batches from the cache are slices of one in-memory tensor: worker processes would
        # only add IPC, so they serve the no-cache path (and the one-off decode) alone.
        num_workers=0 if isinstance(train_set, CachedImages) else config.workers,
        drop_last=len(train_set) > config.batch_size,
        pin_memory=device.type == "cuda",
    )


def train_dataset(prepared: PreparedData, idx: np.ndarray) -> CachedImages | FullDecodeImages:
    """Training items from the decode cache, or decoded from full-size files when there is none."""
    labels = [prepared.data.samples[i].label for i in idx]
    if prepared.images is None:
        paths = [prepared.data.samples[i].path for i in idx]
        return FullDecodeImages(paths, labels, prepared.spec)
    return CachedImages(prepared.images[torch.as_tensor(idx)], labels)


def _validation_images(prepared: PreparedData, idx: np.ndarray, threads: int) -> torch.Tensor:
    if prepared.images is not None:
        return prepared.images[torch.as_tensor(idx)]
    paths = [prepared.data.samples[i].path for i in idx]  # no cache: decode again every epoch
    images, failures = decode_images(paths, prepared.spec, threads=threads, desc="validation")
    if failures:
        raise DataError(list_offenders("unreadable images", [str(paths[i]) for i in failures]))
    return images


def _snapshot(progress, prepared, config, model, optimizer, schedule) -> dict[str, Any]:
    return {
        **progress,
        "fingerprint": prepared.fingerprint, "arch": config.arch,
        "image_size": config.image_size, "epochs": config.epochs,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
    }


def _restore(path, prepared, config, model, optimizer, schedule) -> dict[str, Any]:
    state = load_state(path)
    for key, now in (("fingerprint", prepared.fingerprint), ("arch", config.arch),
                     ("image_size", config.image_size), ("epochs", config.epochs)):
        if state.get(key) != now:
            raise TrainingError(
                f"--resume: {path} was made with {key}={state.get(key)!r}, this run has "
                f"{now!r}; resume with the same data and options, or start afresh without --resume"
            )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return {k: state[k] for k in ("epoch", "history", "best_score", "best", "stale")}
