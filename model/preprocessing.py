"""The eval-time preprocessing: one definition shared by training's evaluation and the service.

A photo is squashed to ``input_size`` x ``input_size`` (no centre crop: a tile is labelled
invasive when the plant appears anywhere in it, so cropping the edges would drop evidence), kept
as uint8 until it reaches the device, and normalised there in a batch (:func:`normalize_batch`).
Keeping uint8 until the last step makes queues and host-to-GPU copies four times smaller.

Importing this module does not import torch: the service decodes uploads in separate processes
that call :func:`prepare_pixels` and hand back a numpy array, and a torch import would cost each
of them hundreds of MB. The functions that build tensors import torch when first called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model.imaging import decode_image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """What a checkpoint says about its input; enough to reproduce preprocessing exactly."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"  # the only mode; stored so a future mode can't be silently misread


def resize_for_model(img: Image.Image, input_size: int) -> Image.Image:
    """Resize an RGB image to the square model input (antialiased bilinear)."""
    if img.size == (input_size, input_size):
        return img
    return img.resize((input_size, input_size), Image.Resampling.BILINEAR)


def image_to_pixels(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> writable uint8 array of shape (H, W, 3)."""
    # np.array copies once into a writable array (np.asarray's view of a PIL image is
    # read-only, which torch refuses to share).
    return np.array(img, dtype=np.uint8)


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) array -> uint8 tensor of shape (3, H, W); the CHW layout is the one copy."""
    import torch

    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def stack_pixels(pixels: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (S, S, 3) arrays -> one uint8 batch (N, 3, S, S) in channels_last memory.

    The stack is the one copy: the result is a view of the (N, S, S, 3) array, which is the
    memory layout (channels_last) the engines run in, so no transpose copy follows.
    """
    import torch

    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor of shape (3, H, W)."""
    return pixels_to_tensor(image_to_pixels(img))


def prepare_pixels(
    source: bytes | str | os.PathLike,
    spec: PreprocessSpec,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Bytes or path -> the model-size uint8 (S, S, 3) array, without touching torch."""
    img = decode_image(source, min_size=spec.input_size, max_pixels=max_pixels)
    return image_to_pixels(resize_for_model(img, spec.input_size))


def prepare_input(
    source: bytes | str | os.PathLike,
    spec: PreprocessSpec,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Bytes or path -> the uint8 (3, S, S) tensor the model's batch is made of."""
    return pixels_to_tensor(prepare_pixels(source, spec, max_pixels))


def normalize_batch(
    batch: torch.Tensor, spec: PreprocessSpec, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """uint8 (N, 3, S, S) on any device -> normalised float batch (``dtype``, default float32)."""
    import torch

    dtype = dtype or torch.float32
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        mean, std = _mean_std(spec, batch.device)  # constants in the traced graph, not cached
    else:
        key = (spec.mean, spec.std, batch.device)
        if key not in _MEAN_STD:
            _MEAN_STD[key] = _mean_std(spec, batch.device)
        mean, std = _MEAN_STD[key]
    out = (batch.float() / 255.0 - mean) / std
    return out.to(dtype)


# (mean, std, device) -> the (1, 3, 1, 1) tensors: built once, not for every batch
_MEAN_STD: dict = {}


def _mean_std(spec: PreprocessSpec, device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std
