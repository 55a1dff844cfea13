"""The resumable training state written beside the checkpoint after every epoch.

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
from training.errors import TrainingError

STATE_VERSION = 1


def state_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".train-state.pt")


def save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"version": STATE_VERSION, **state}, buffer)
    write_atomically(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"--resume: no training state at {path} (nothing to resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign file
        raise TrainingError(f"--resume: {path} is not a readable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainingError(f"--resume: {path} is not a training state of this version")
    return state
