"""Test images in every format and mode the service promises to read, and broken ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(size: tuple[int, int] = (96, 72), seed: int = 0) -> Image.Image:
    """A colourful RGB picture of 8x8 blocks (different seeds give clearly different pictures)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    pixels = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))[: size[1], : size[0]]
    return Image.fromarray(pixels, "RGB")


def field_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Colour changing over tens of pixels, as in a photo of vegetation. ``photo``'s hard 8x8
    blocks are the worst case for decoders that differ (a scaled IDCT against a full decode and
    block average: 2-4 grey levels apart there, 0.1-0.45 on this and on real photos)."""
    return photo((size[0] // 24 + 2, size[1] // 24 + 2), seed).resize(
        size, Image.Resampling.BICUBIC
    )


def encode(img: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (96, 72), seed: int = 0) -> bytes:
    return encode(photo(size, seed), "JPEG", quality=90)


def png_bomb_header(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def image_in_mode(mode: str, size: tuple[int, int] = (80, 60)) -> Image.Image:
    """``photo`` converted to ``mode`` (16-bit grayscale built from a real 16-bit ramp)."""
    if mode == "I;16":
        ramp = np.linspace(0, 65535, size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0])
        return Image.fromarray(ramp)  # uint16 -> mode I;16
    img = photo(size)
    if mode == "P":
        pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.info["transparency"] = 0
        return pal
    return img.convert(mode)
