"""The contract between training and serving.

Everything both sides must agree on lives here, written once: how a network is built from an
architecture name, how a photo becomes the model's input tensor, how a checkpoint is written and
read, and how a batch is scored. ``training/`` and ``app/`` both import it; it imports neither.
"""

from model.architectures import build_model, replace_classifier
from model.checkpoint import (
    CheckpointError,
    CheckpointMetadata,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from model.imaging import ImageDecodeError, decode_image
from model.inference import Classifier, resolve_device, resolve_precision
from model.preprocessing import PreprocessSpec, image_to_tensor, resize_for_model

__all__ = [
    "CheckpointError",
    "CheckpointMetadata",
    "Classifier",
    "ImageDecodeError",
    "LoadedCheckpoint",
    "PreprocessSpec",
    "build_model",
    "decode_image",
    "image_to_tensor",
    "load_checkpoint",
    "replace_classifier",
    "resize_for_model",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
]
