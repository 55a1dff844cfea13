"""``fit``: labelled photos -> a checkpoint, resumable after a kill.

The shape follows torchvision's reference ``train.py``: load the data, build the model, then
train one epoch / evaluate / save. By default (``--patience 0``) a fixed schedule: every epoch
is trained and the last one kept; ``--patience N`` stops early and keeps the epoch with the best
validation score. Details that matter here:

- photos are decoded once into the decode cache (``training.images``), unless ``cache="none"``;
- validation scores through the service's ``Classifier`` (``training.loop``), and the decision
  threshold stored in the checkpoint is the one maximising Youden's J on validation; multi-class
  data (class folders, no invasive class) has no threshold, and its validation score (what
  ``--patience`` watches) is the log loss (``training.validation``);
- everything that can be refused (options, output path, architecture, weights, device, the
  split) is checked before the photos are decoded, which takes minutes on a large set;
- shuffling and augmentation are seeded per epoch, so a resumed run repeats the epochs it
  redoes exactly as an uninterrupted one would;
- under ``torchrun`` the same code trains a DistributedDataParallel model, ``--batch-size`` being
  the global batch (``training.distributed`` says how the ranks share the work).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import CheckpointMetadata, save_checkpoint
from model.inference import resolve_precision
from model.preprocessing import PreprocessSpec
from training import distributed
from training.config import FitConfig, log_path
from training.data import LabelledData, load_groups, load_labelled_data, without_indices
from training.distributed import EveryRankError
from training.ema import WeightEma, restore_ema
from training.errors import DataError, TrainingError, list_offenders
from training.images import (
    CachedImages,
    FullDecodeImages,
    cached_decode,
    decode_images,
    default_cache_dir,
    find_unreadable,
)
from training.loop import score_with_classifier, train_one_epoch
from training.optim import build_optimizer_and_schedule
from training.preflight import check_fit_output
from training.runlog import RunLog
from training.splits import holdout_split
from training.state import (
    OPTION_KEYS,
    load_resumable,
    restore,
    save_state,
    snapshot,
    state_path,
)
from training.summary import announce, class_counts, data_lines, finish, plural, say
from training.validation import checkpoint_update, epoch_figures, epoch_text, validation_metrics
from training.weights import build_initial_model, check_initial_weights

EpochCallback = Callable[[int, dict[str, Any]], None]
SplitCheck = Callable[[list[int], list[str] | None], object]


@dataclass
class PreparedData:
    data: LabelledData
    groups: list[str] | None
    spec: PreprocessSpec
    images: torch.Tensor | None  # the decode cache, row i = data.samples[i]; None: no cache
    fingerprint: str


def prepare_data(config: FitConfig, *, data: LabelledData | None = None,
                 check_split: SplitCheck | None = None) -> PreparedData:
    """Index, validate and (unless ``cache="none"``) decode the dataset once.

    ``data``: the index, when the caller has made it already. ``check_split(labels, groups)``
    runs before the decode: a split that cannot be made (too few groups) fails at once.
    """
    if data is None:
        data = load_labelled_data(config.data, skip_bad=config.skip_bad,
                                  positive_class=config.positive_class)
    if distributed.is_main():
        say(data_lines(config, data))  # before the decode: the first thing a user sees
    groups = load_groups(data, config.group_column, config.group_file) if config.group_column \
        else None
    if check_split is not None:
        check_split(data.labels, groups)
    spec = PreprocessSpec(input_size=config.image_size)
    images = None
    paths = [s.path for s in data.samples]
    if config.cache != "none":
        cache_dir = None
        if config.cache == "disk":
            cache_dir = config.cache_dir or default_cache_dir()
        images, failures = cached_decode(paths, spec, threads=config.workers, cache_dir=cache_dir)
    else:  # nothing is kept, but a photo that does not decode must not surface mid-epoch
        failures = find_unreadable(paths, spec, threads=config.workers)
    if failures:
        bad = {data.samples[i].name: why for i, why in sorted(failures.items())}
        if not config.skip_bad:
            raise DataError(
                f"{config.data}: the dataset has problems (pass --skip-bad to drop these "
                f"rows and go on)\n  "
                + list_offenders("unreadable images", [f"{n} ({w})" for n, w in bad.items()])
            )
        keep = [i for i in range(len(paths)) if i not in failures]
        images = images[keep] if images is not None else None
        data, groups = data.without(bad), without_indices(groups, failures)
        if distributed.is_main():  # the "images" line above counted these: correct it
            tqdm.write(f"  decoding    {plural(len(bad), 'more unreadable image')} skipped "
                       f"by --skip-bad; {len(data.samples)} images left: "
                       f"{class_counts(data.class_names, data.labels)}")
    if data.skipped and distributed.is_main():
        tqdm.write(f"--skip-bad: {list_offenders('skipped', data.skipped)}")
    return PreparedData(data, groups, spec, images, data.fingerprint())


def fit(config: FitConfig, *, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Train on a hold-out split (or k folds, see ``training.cv``); returns the result summary.

    Under ``torchrun`` every process calls this; they train one model together (DDP).
    """
    started = time.perf_counter()
    check_options(config)
    runtime(config)  # a bad --device or --precision fails now, not after decoding the data
    # Under DDP only rank 0 reads --weights (the others start from its copy).
    weights = config.weights if distributed.Launch.from_env().rank == 0 else "none"
    check_initial_weights(config.arch, weights, config.image_size)
    if config.folds > 1:
        from training.cv import cross_validate

        return cross_validate(config, on_epoch_end=on_epoch_end)

    def check_split(labels: list[int], groups: list[str] | None) -> None:
        holdout_split(labels, groups, config.val_fraction, config.seed)

    with distributed.session(config.device, config.dist_timeout):
        with distributed.main_rank_first():
            prepared = prepare_data(config, check_split=check_split)
        train_idx, val_idx = holdout_split(prepared.data.labels, prepared.groups,
                                           config.val_fraction, config.seed)
        # A demo trains on generated photos in a temporary folder: a log there would be gone
        # before anyone could read it, so it writes none.
        keep_log = distributed.is_main() and not config.demo
        log = RunLog(log_path(config) if keep_log else None)
        if log.path is not None and not config.resume:  # a new run: not appended to an old one
            log.path.unlink(missing_ok=True)
        output = Path(config.output)
        result = train_split(config, prepared, train_idx, val_idx, output, log,
                             on_epoch_end=on_epoch_end)
        if distributed.is_main():
            finish(config, result, output, started)
        return result


def check_options(config: FitConfig) -> None:
    """What the flags cannot ask together, and an output that cannot be written: refused
    before any work (``invasive-train fit`` checks each flag's own range as it parses it)."""
    if distributed.Launch.from_env().rank == 0:  # the only rank that writes (under torchrun)
        check_fit_output(Path(config.output), config.folds,
                         Path(config.log) if config.log else None)
    distributed.check_options(config.batch_size, config.folds)
    if config.ensemble and config.folds < 2:
        raise TrainingError("--ensemble writes the models of a cross-validation as one "
                            "checkpoint: add --folds k (k >= 2, e.g. --folds 5)")
    if config.freeze_epochs and config.weights != "none" and config.schedule != "cosine":
        raise TrainingError(f"--freeze-epochs needs --schedule cosine (the backbone's own "
                            f"warm-up after it is part of that schedule), not {config.schedule}")


def runtime(config: FitConfig) -> tuple[torch.device, str]:
    """This process's device and precision; a user's impossible choice is a clear error."""
    try:
        device = distributed.local_device(config.device)
        if device.type == "cuda" and device.index is not None \
                and device.index >= torch.cuda.device_count():
            raise ValueError(f"there is no GPU {device.index}: CUDA sees "
                             f"{plural(torch.cuda.device_count(), 'GPU')} (cuda:0 ...)")
        return device, resolve_precision(config.precision, device)
    except TrainingError:
        raise
    except (ValueError, RuntimeError) as exc:  # "cuda requested but not available", "fp16 on CPU"
        raise EveryRankError(f"--device {config.device} --precision {config.precision}: "
                             f"{exc}") from None


def train_split(
    config: FitConfig,
    prepared: PreparedData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    output: Path,
    log: RunLog,
    *,
    fold: int | None = None,
    held_out: np.ndarray | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train on ``train_idx``, validate on ``val_idx``, keep a checkpoint at ``output``: the
    last epoch's (``--patience 0``) or the best validated one's (``--patience N``).

    ``held_out`` (cross-validation) is only counted and reported: the images of the fold that
    ``training.cv`` scores afterwards; nothing here looks at them.
    """
    data, spec = prepared.data, prepared.spec
    main = distributed.is_main()  # rank 0 (or the only process): the one that writes and prints
    device, precision = runtime(config)
    torch.manual_seed(config.seed)
    # Under DDP only rank 0 reads pretrained weights: DDP copies rank 0's weights to the others.
    model = build_initial_model(config.arch, len(data.class_names),
                                config.weights if main else "none")
    model = model.to(device, memory_format=torch.channels_last)
    model = distributed.use_sync_batchnorm(model, device, config.sync_bn)

    labels = np.asarray(data.labels)
    train_set = train_dataset(prepared, train_idx)
    steps = len(train_set) // config.batch_size if len(train_set) > config.batch_size else 1
    optimizer, schedule = build_optimizer_and_schedule(model, config, steps)
    ema = WeightEma(model, config.ema_decay) if config.ema_decay else None
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    run_info = {"fold": fold, "device": str(device), "precision": precision,
                "train_size": len(train_idx), "val_size": len(val_idx),
                "world_size": distributed.get_world_size()}
    if held_out is not None:
        run_info["held_out_size"] = len(held_out)
    metadata = CheckpointMetadata(
        arch=config.arch, class_names=data.class_names, positive_class=data.positive_class,
        input_size=spec.input_size, training_config={**config.as_metadata(), **run_info},
        data_fingerprint=prepared.fingerprint, demo=config.demo,
    )
    # best: the epoch with the best validation score so far (what "*" marks); kept: the epoch
    # the checkpoint holds. They differ only under a fixed schedule (--patience 0).
    progress: dict[str, Any] = {"epoch": 0, "history": [], "best_score": -math.inf,
                                "best": None, "kept": None, "stale": 0}
    state_file = state_path(output)
    identity = resume_identity(config, prepared.fingerprint)
    state = distributed.from_main(lambda: _resume_state(state_file, identity, config, fold))
    if main:
        announce(config, prepared, train_idx, val_idx, fold, model, steps, output, log.path,
                  device, precision, held_out=held_out)
    if state is not None:
        progress = restore(state, model, optimizer, schedule)
        restore_ema(ema, state, state_file)
        if main:
            tqdm.write(f"resuming {output} after epoch {progress['epoch']}")
    else:
        log.write("start", config=config.as_metadata(), **run_info)
    train_model = distributed.data_parallel(model, device)  # DDP wrapper, or model itself

    val_labels = labels[val_idx]
    tag = f"fold {fold} " if fold is not None else ""
    for epoch in range(progress["epoch"] + 1, config.epochs + 1):
        if config.patience and progress["stale"] >= config.patience:
            break
        distributed.fault_injection_point(epoch)  # test-only hook; a no-op in normal use
        loader = epoch_loader(train_set, config, epoch, device)
        stats = train_one_epoch(train_model, loader, optimizer, schedule, device=device,
                                precision=precision, spec=spec, scaler=scaler,
                                desc=f"{tag}epoch {epoch}/{config.epochs}",
                                label_smoothing=config.label_smoothing, ema=ema,
                                augment=config.augment, mixup=config.mixup)
        loss_sum, images = distributed.sum_across_ranks([stats.loss * stats.images, stats.images])
        stats = replace(stats, loss=loss_sum / max(1.0, images), images=int(images))
        distributed.sync_buffers(model)
        val_start = time.perf_counter()
        kept_model = ema.module if ema is not None else model  # what is validated and saved
        if len(val_idx):
            val_images = split_images(prepared, distributed.my_share(val_idx), config.workers)
            probs = score_with_classifier(kept_model, metadata, val_images, device=device,
                                          precision=precision)
            probs = distributed.gather_rows(probs, len(val_idx))  # the whole validation set
            metrics, score = validation_metrics(data, val_labels, probs)
        else:  # a cross-validation fold under the fixed schedule: no split, nothing to choose
            metrics, score = {}, -math.inf
        record = {
            "fold": fold, "epoch": epoch, "train_loss": round(stats.loss, 5),
            **(epoch_figures(metrics) if metrics else {}),
            "images_per_s": round(stats.images_per_s, 2), "train_s": round(stats.seconds, 3),
            "data_s": round(stats.data_seconds, 3), "compute_s": round(stats.compute_seconds, 3),
            "val_s": round(time.perf_counter() - val_start, 3),
            "lr": optimizer.param_groups[0]["lr"],
        }
        record["epoch_s"] = round(record["train_s"] + record["val_s"], 3)
        improved = score > progress["best_score"]
        if improved:
            progress.update(best_score=score, stale=0, best={**metrics, "epoch": epoch})
        else:
            progress["stale"] += 1
        if improved or not config.patience:  # patience 0: a fixed schedule keeps the last epoch
            progress["kept"] = {**metrics, "epoch": epoch}
            metadata = metadata.model_copy(
                update=checkpoint_update(metrics, epoch, fixed_schedule=not config.patience)
                if metrics else UNVALIDATED_FOLD)
            if main:
                save_checkpoint(output, kept_model, metadata)
        progress["epoch"] = epoch
        progress["history"].append(record)
        log.write("epoch", **record)
        if main:
            tqdm.write(
                f"{tag}epoch {epoch:>3}  loss {stats.loss:.4f}"
                f"{epoch_text(metrics) if metrics else ''}  "
                f"{stats.images_per_s:6.1f} img/s  {record['epoch_s']:.1f}s"
                + ("  *" if improved else "")
            )
            state_now = snapshot(progress, identity, model, optimizer, schedule)
            save_state(state_file, {**state_now, **({"ema": ema.state_dict()} if ema else {})})
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    result = {"checkpoint": str(output), "log": str(log.path) if log.path else None,
              "fold": fold, "kept": progress["kept"], "best": progress["best"],
              "epochs_run": progress["epoch"],
              "history": progress["history"], **run_info,
              "task": "multiclass" if data.multiclass else "binary"}
    log.write("result", **{k: v for k, v in result.items() if k != "history"})
    return result


# The metadata of a fold checkpoint trained without a validation split, until the
# cross-validation ends and writes its threshold (training.cv.thresholds_from_other_folds).
UNVALIDATED_FOLD = {"metrics": {"validation": None, "selection": "last_epoch",
                                "threshold_method": "pending: chosen on the other folds' "
                                "out-of-fold predictions when the cross-validation ends"}}


def epoch_loader(train_set, config: FitConfig, epoch: int, device: torch.device) -> DataLoader:
    """This epoch's shuffled batches; order and augmentation are seeded by (seed, epoch).

    Under DDP each rank loads its share of each of these same global batches.
    """
    seed = config.seed * 1000 + epoch
    torch.manual_seed(seed)  # augmentation, reproducible on resume
    shuffled = dict(batch_size=config.batch_size, shuffle=True,
                    generator=torch.Generator().manual_seed(seed),
                    drop_last=len(train_set) > config.batch_size)
    # Batches from the cache are slices of one in-memory tensor: worker processes would only
    # add IPC, so they serve the no-cache path (and the one-off decode) alone.
    loading = dict(num_workers=0 if isinstance(train_set, CachedImages) else config.workers,
                   pin_memory=device.type == "cuda")
    if distributed.get_world_size() > 1:
        batches = distributed.shard_batches(DataLoader(range(len(train_set)), **shuffled))
        # A loader without a generator would draw its worker seed from the global RNG, shifting
        # the augmentation's random numbers away from the single-process run's.
        return DataLoader(train_set, batch_sampler=batches, **loading,
                          generator=torch.Generator().manual_seed(seed))
    return DataLoader(train_set, **shuffled, **loading)


def train_dataset(prepared: PreparedData, idx: np.ndarray) -> CachedImages | FullDecodeImages:
    """Training items from the decode cache, or decoded from full-size files when there is none."""
    labels = [prepared.data.samples[i].label for i in idx]
    if prepared.images is None:
        paths = [prepared.data.samples[i].path for i in idx]
        return FullDecodeImages(paths, labels, prepared.spec)
    return CachedImages(prepared.images[torch.as_tensor(idx)], labels)


def split_images(prepared: PreparedData, idx: np.ndarray, threads: int) -> torch.Tensor:
    """The uint8 model-size tensors of images ``idx``, for scoring (no augmentation)."""
    if prepared.images is not None:
        return prepared.images[torch.as_tensor(idx)]
    paths = [prepared.data.samples[i].path for i in idx]  # no cache: decode again every epoch
    images, failures = decode_images(paths, prepared.spec, threads=threads, desc="validation")
    if failures:
        raise DataError(list_offenders("unreadable images", [str(paths[i]) for i in failures]))
    return images


def resume_identity(config: FitConfig, fingerprint: str) -> dict[str, Any]:
    """What ``training.state.load_resumable`` compares on ``--resume``."""
    options = {k: getattr(config, k) for k in OPTION_KEYS}
    # Whether a validation split is held out, resolved (a plain fit always holds one out), so
    # that a fold state never resumes training on the other set of photos.
    options["fold_inner_split"] = config.inner_split_per_fold if config.folds > 1 else True
    if config.group_file is not None:  # the same file, however the path was written
        options["group_file"] = str(Path(config.group_file).resolve())
    return {"fingerprint": fingerprint, "arch": config.arch, "image_size": config.image_size,
            "epochs": config.epochs, "options": options}


def _resume_state(state_file: Path, identity: dict[str, Any], config: FitConfig,
                  fold: int | None) -> dict[str, Any] | None:
    """The saved state to continue from; None: start afresh (a fold that never started)."""
    if not config.resume or (fold is not None and not state_file.is_file()):
        return None
    return load_resumable(state_file, identity)  # "nothing to resume", or a mismatch: an error
