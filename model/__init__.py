"""The contract between training and serving.

Everything both sides must agree on lives here, written once: how a network is built from an
architecture name, how a photo becomes the model's input tensor, how a checkpoint is written and
read, and how a batch is scored. ``training/`` and ``app/`` both import it; it imports neither.

Exports load lazily: the service's decode processes import ``model.imaging`` and
``model.preprocessing`` only, and must not pay for torch (hundreds of MB per process).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "model.architectures",
    "replace_classifier": "model.architectures",
    "CheckpointError": "model.checkpoint",
    "CheckpointMetadata": "model.checkpoint",
    "LoadedCheckpoint": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "ImageDecodeError": "model.imaging",
    "decode_image": "model.imaging",
    "Classifier": "model.inference",
    "resolve_device": "model.inference",
    "resolve_precision": "model.inference",
    "PreprocessSpec": "model.preprocessing",
    "image_to_tensor": "model.preprocessing",
    "resize_for_model": "model.preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
