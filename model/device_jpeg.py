"""Decode plain JPEGs on the model's device into the model-size uint8 batch (nvJPEG on CUDA).

On a GPU host, decoding on the CPU (Pillow, ``model.preprocessing.prepare_pixels``) is what
limits throughput: 5 CPU-ms per 800x600 photo, against 0.14 for ``torchvision.io.decode_jpeg``
on an H100 (``benchmarks/gpu_decode.py``). This module gives the same pixels
``prepare_pixels`` gives, as closely as a different decoder allows:

- Pillow decodes a large JPEG at reduced DCT scale (``draft``: 1/2, 1/4 or 1/8). nvJPEG decodes
  at full size, so the same factor is applied here by averaging blocks of that many pixels,
  which is close to what the scaled IDCT computes: the mean difference to the CPU path on the
  dev photos drops from 1.3 to 0.35 levels (of 255) with it.
- EXIF orientation is applied with flips and transposes (nvJPEG ignores it).
- Then the squash to ``size`` x ``size``, antialiased bilinear, as Pillow's ``resize``.

Only what :attr:`model.inspection.ImageCost.plain_jpeg` says is plain goes here (one Huffman
scan of 3 components, ending in its EOI marker); everything else stays with Pillow, whose
errors the API reports. An image this decoder fails on is returned as ``None`` for the caller
to decode the other way, so no upload is lost to a decoder's limits.

Torch is imported by the functions that use it, as in :mod:`model.preprocessing`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("model.device_jpeg")

# torchvision 0.29 deprecates its image codecs for TorchCodec's; decode_jpeg still works and is
# what the pinned torchvision and the CUDA hosts' builds have. Said once here, not per batch.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated"
)
# Largest stored size decoded on the device: it decodes at full size (a 12 MP phone photo is
# 36 MB of pixels there), so bigger images go to Pillow, which decodes them at reduced scale.
MAX_DEVICE_PIXELS = 25_000_000
# Stored pixels resized in one go (as float32: 16 bytes a pixel across RGB and the copy): 64 of
# the 800x600 photos fit at once, a 12 MP phone photo goes 5 at a time.
RESIZE_CHUNK_PIXELS = 64_000_000

DRAFT_SCALES = (8, 4, 2, 1)


def decodes_in_batch(cost) -> bool:
    """Whether an image inspected as ``cost`` (:class:`model.inspection.ImageCost`) is decoded
    in the batch rather than by a decode process: a plain, light JPEG of at most
    :data:`MAX_DEVICE_PIXELS`. On CUDA this module decodes it (nvJPEG); on a CPU the inference
    thread does, with Pillow (``app.pipeline``)."""
    return cost.plain_jpeg and not cost.heavy and cost.source_pixels <= MAX_DEVICE_PIXELS


def draft_scale(width: int, height: int, size: int) -> int:
    """The DCT scale Pillow's ``draft("RGB", (size, size))`` picks: the largest of 8, 4, 2, 1
    that keeps both sides at least ``size`` (Pillow's ``JpegImageFile.draft``)."""
    fits = min(width // size, height // size)
    return next((scale for scale in DRAFT_SCALES if fits >= scale), 1)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) as stored -> upright, for EXIF orientation 1-8 (``ImageOps.exif_transpose``)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def resize_like_pillow(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) stored-size images -> uint8 (N, 3, size, size): the draft's block
    average, then antialiased bilinear (what ``prepare_pixels`` does with Pillow)."""
    import torch
    import torch.nn.functional as F

    x = images.float()
    scale = draft_scale(x.shape[-1], x.shape[-2], size)
    if scale > 1:
        x = F.avg_pool2d(x, scale, ceil_mode=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def decode_batch(
    jpegs: Sequence[bytes], orientations: Sequence[int], size: int, device: torch.device
) -> list[torch.Tensor | None]:
    """Each JPEG -> its uint8 (3, size, size) tensor on ``device``, or ``None`` where the
    decoder failed on it. One batched decode (nvJPEG decodes a list in one call); when that
    fails, each image alone, so one bad file costs only itself."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not jpegs:
        return []
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
    if device.type == "cuda":
        # nvJPEG writes on a stream of its own that does not wait for ours; start from an idle
        # stream so no queued kernel still reads memory it may be given (pytorch/vision#9606).
        torch.cuda.current_stream(device).synchronize()
    decoded: list[torch.Tensor | None]
    try:
        decoded = list(_decode(decode_jpeg, encoded, ImageReadMode.RGB, device))
    except Exception as exc:
        logger.info("batched JPEG decode failed (%s); decoding %d one by one", exc, len(jpegs))
        decoded = []
        for one in encoded:
            try:
                decoded.extend(_decode(decode_jpeg, [one], ImageReadMode.RGB, device))
            except Exception:
                decoded.append(None)
    upright = [
        None if image is None else orient(image, orientation)
        for image, orientation in zip(decoded, orientations, strict=True)
    ]
    # Photos from one camera share a size: resize each size's images in one go.
    out: list[torch.Tensor | None] = [None] * len(upright)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(upright):
        if image is not None:
            by_shape.setdefault(tuple(image.shape), []).append(index)
    for shape, indices in by_shape.items():
        # A bounded number of pixels at a time: 64 phone photos are 2.3 GB decoded and 9 GB
        # as floats, which one server process must not hold (several share a GPU).
        per_chunk = max(1, RESIZE_CHUNK_PIXELS // (shape[-1] * shape[-2]))
        for start in range(0, len(indices), per_chunk):
            chunk = indices[start : start + per_chunk]
            resized = resize_like_pillow(torch.stack([upright[i] for i in chunk]), size)
            for row, index in enumerate(chunk):
                out[index] = resized[row]
    return out


def _decode(decode_jpeg, encoded, mode, device) -> list[torch.Tensor]:
    result = decode_jpeg(encoded, mode=mode, device=device)
    if not isinstance(result, list):  # a single tensor in some torchvision versions
        result = list(result) if result.dim() == 4 else [result]
    return result
