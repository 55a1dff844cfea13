"""The resumable training state written beside the checkpoint after every epoch.

It exists for ``--resume`` after a kill: a run that finishes removes it (rank 0 does, under
``torchrun``; a cross-validation once all its folds are done) unless ``--keep-train-state``.

``<checkpoint>.train-state.pt`` holds the current (not the best) weights, the optimiser and
schedule state, the epoch reached, early-stopping counters and the history. It is written
atomically like the checkpoint and read back with ``torch.load(weights_only=True)``, which
accepts only tensors and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import write_atomically
from training.config import sibling
from training.errors import TrainingError

STATE_VERSION = 1


def state_path(checkpoint: Path) -> Path:
    return sibling(checkpoint, ".train-state.pt")


def save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"version": STATE_VERSION, **state}, buffer)
    write_atomically(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(
            f"--resume: no training state at {path} (nothing to resume: the run never finished "
            "an epoch, or it finished and removed its state; --keep-train-state keeps it)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign file
        raise TrainingError(f"--resume: {path} is not a readable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainingError(f"--resume: {path} is not a training state of this version")
    return state


# What a resumed run must share with the run that wrote the state, and what it continues.
IDENTITY_KEYS = ("fingerprint", "arch", "image_size", "epochs")
# Also the options that decide the split (a changed one would let photos that trained the first
# epochs choose the kept epoch and threshold) and the optimisation, so that the resumed run
# trains as the uninterrupted one would. Kept under "options" (the state's own "schedule" is the
# scheduler's); a state written before they were recorded has none, and is not checked on them.
OPTION_KEYS = ("positive_class", "seed", "val_fraction", "group_column", "group_file",
               "batch_size", "lr", "weight_decay", "warmup_epochs", "schedule", "freeze_epochs",
               "backbone_lr_scale", "ema_decay", "label_smoothing", "mixup", "augment",
               "fold_inner_split")
# Options recorded since a later version: what a state written before then trained with.
# (Every run held out a validation split then, the folds of a cross-validation too.)
LEGACY_OPTIONS = {"mixup": 0.0, "fold_inner_split": True}
DISPLAY_NAMES = {"fingerprint": "data (fingerprint)",
                 "fold_inner_split": "an inner validation split in each fold"}
PROGRESS_KEYS = ("epoch", "history", "best_score", "best", "kept", "stale")


def snapshot(progress: dict[str, Any], identity: dict[str, Any], model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, schedule: Any) -> dict[str, Any]:
    """The state to save after an epoch: ``model`` is the bare module (never a DDP wrapper)."""
    return {
        **progress, **identity,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
    }


def load_resumable(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """:func:`load_state`, refused unless it was written with the same data and options."""
    state = load_state(path)
    pairs = [(k, state.get(k), identity[k]) for k in IDENTITY_KEYS]
    if isinstance(state.get("options"), dict):
        pairs += [(k, state["options"].get(k, LEGACY_OPTIONS.get(k)), identity["options"][k])
                  for k in OPTION_KEYS]
    for key, theirs, ours in pairs:
        if theirs != ours:
            name = DISPLAY_NAMES.get(key, "--" + key.replace("_", "-"))
            raise TrainingError(
                f"--resume: {path} was made with {name} {theirs!r}, this run has {ours!r}; "
                "resume with the same data and options, or start afresh without --resume"
            )
    return state


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            schedule: Any) -> dict[str, Any]:
    """Load ``state`` into the model, optimiser and schedule; returns the progress counters."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    progress = {k: state[k] for k in PROGRESS_KEYS if k in state}
    # A state written before "kept" existed called the kept epoch "best".
    progress.setdefault("kept", state["best"])
    return progress
