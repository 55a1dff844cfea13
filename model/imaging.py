"""Turn uploaded bytes or a file on disk into an upright RGB picture, cheaply and safely.

Both the service and offline prediction decode through :func:`decode_image`, so they see the
same pixels. JPEGs are decoded at reduced scale (Pillow ``draft``: 1/2, 1/4 or 1/8 in the DCT)
when the photo is much larger than the model's input, which makes decoding a phone photo several
times cheaper with no visible change after the resize to model size.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# DEFAULT_MAX_PIXELS is imported from here by model.inspection, which may import only Pillow
# and this module (tests/model/test_inspection.py keeps the admission path torch-free).
from model.pixel_limit import DEFAULT_MAX_PIXELS, configured_max_pixels  # noqa: F401

try:  # phone photos (HEIC/HEIF); optional at import so a broken wheel doesn't take the service down
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    HEIF_SUPPORTED = False

# EXIF/ICC quirks of field cameras make Pillow warn ("Tag data larger than file", "Corrupt
# EXIF data"): harmless, and noise in a server's log. One process-wide filter, set once: a
# warnings.catch_warnings() around each open is not thread-safe (inference threads decode JPEGs
# while the inspection thread opens others) and could leave "ignore every warning" behind.
warnings.filterwarnings("ignore", module=r"PIL\.")

# AVIF: Pillow's own plugin (11.3+, its wheels bundle libavif); open_formats() leaves it out
# where the installed Pillow has none, and such a file is then refused as unsupported.
SUPPORTED_FORMATS = frozenset(
    {"JPEG", "PNG", "WEBP", "HEIF", "HEIC", "AVIF", "BMP", "TIFF", "GIF", "MPO"}
)


@functools.cache
def open_formats() -> tuple[str, ...]:
    """Supported formats Pillow can open here. Opening with only these keeps other plugins'
    ``_open`` off untrusted bytes: EPS parses its header in Python (an EPS header over 5 MB of
    comment lines took 2.7 s in ``Image.open`` before it was refused, measured)."""
    Image.init()
    return tuple(sorted(f for f in SUPPORTED_FORMATS if f in Image.OPEN))

# We enforce our own pixel limit explicitly; Pillow's global check would only warn below 2x its
# limit, so switch it off and never rely on it.
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """An input that is not a usable image. ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __reduce__(self):  # crosses process boundaries (decode processes) with its code intact
        return (type(self), (self.code, self.message, self.status))


def decode_image(
    source: bytes | str | os.PathLike,
    min_size: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode ``source`` into an upright 8-bit RGB image.

    ``min_size``: when given, JPEGs may be decoded at reduced scale as long as both sides stay at
    least this large. The format is detected from the bytes, never from a name or content type.
    ``max_pixels``: the largest width x height decoded (default :func:`configured_max_pixels`).
    """
    if max_pixels is None:
        max_pixels = configured_max_pixels()
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageDecodeError("empty_file", "the uploaded file is empty", status=400)
        return _decode(io.BytesIO(source), min_size, max_pixels)
    with Path(source).open("rb") as stream:
        return _decode(stream, min_size, max_pixels)


def unsupported_format_error(prefix: bytes) -> ImageDecodeError:
    """The 415 for bytes no supported format opens: it names the format when another Pillow
    plugin recognises the first bytes (only its cheap prefix probe runs, never its parser)."""
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        if name in open_formats() or accept is None:
            continue
        try:
            accepted = accept(prefix[:16])
        except Exception:  # a plugin's probe failing means "not mine"
            continue
        if accepted and not isinstance(accepted, str):
            return ImageDecodeError(
                "unsupported_media_type", f"image format {name} is not supported", 415
            )
    return ImageDecodeError(
        "unsupported_media_type",
        "the file is not an image in a supported format (JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP, "
        "TIFF)",
        status=415,
    )


def _decode(stream, min_size: int | None, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(stream, formats=list(open_formats()))
    except UnidentifiedImageError:
        stream.seek(0)
        raise unsupported_format_error(stream.read(16)) from None
    except (OSError, SyntaxError, ValueError) as exc:  # recognised, but the header is cut short
        raise ImageDecodeError(
            "corrupt_image", f"the image could not be decoded ({exc})", status=422
        ) from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            "unsupported_media_type", f"image format {img.format} is not supported", status=415
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            "image_too_large",
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            status=413,
        )
    if min_size and img.format in ("JPEG", "MPO"):
        # Only reduce while both sides stay >= min_size; draft never upsamples.
        img.draft("RGB", (min_size, min_size))
    try:
        img.load()
        fmt = img.format  # exif_transpose's copy has none
        img = ImageOps.exif_transpose(img)
        if fmt == "BMP" and img.mode == "RGBA" and img.getextrema()[3] == (0, 0):
            # An alpha channel left at 0 by its writer: viewers show such a BMP opaque, and
            # honouring it would score a blank white picture.
            img = img.convert("RGB")
        return _to_rgb(img)
    except MemoryError:
        raise ImageDecodeError(
            "image_too_large", "there was not enough memory to decode the image", status=413
        ) from None
    except Exception as exc:  # damaged files raise OSError, EOFError, RuntimeError, TypeError...
        raise ImageDecodeError(
            "corrupt_image", f"the image could not be decoded ({exc})", status=422
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode (RGBA, P, LA, CMYK, I;16, F, ...) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # NaN or infinite pixels (float TIFFs mark "no data" so) neither set the range nor
        # reach the model: they count as black
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0  # floating-point pixels are usually 0..1 (scientific and drone exports)
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white rather than whatever colour hid under the alpha.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
