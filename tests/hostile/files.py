"""Every kind of file a phone, a tool or an attacker uploads, with the answer each must get.

Two families. **Accepted**: every format and mode field phones and desktop tools produce
(progressive, EXIF-rotated, CMYK, 16-bit, interlaced, animated, HEIC, MPO, panoramas, 1x1,
wrong names and content types): 200. **Hostile**: not images, damaged images, and valid images
built to cost far more to decode than their size suggests (pixel bombs, thousands of JPEG scans,
metadata floods, 500k TIFF strips): each its documented status and code (see the service's error
contract). Files are built on first use and cached, so a session builds each once.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.hostile import craft

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # the service's default per-file limit
Outcome = tuple[int, str | None]  # (status, error code); code None: a prediction (200)


@dataclass(frozen=True)
class FileKind:
    """One kind of upload: how to build it and the answer it must get alone (``expect``), or
    one of ``also`` where the contract allows more than one (each explained in ``description``).
    """

    name: str
    description: str
    make: Callable[[], bytes]
    expect: Outcome
    also: tuple[Outcome, ...] = ()
    filename: str = "photo.jpg"
    content_type: str = "image/jpeg"

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return (self.expect, *self.also)

    def data(self) -> bytes:
        """The file's bytes, built once per session."""
        if self.name not in _BUILT:
            _BUILT[self.name] = self.make()
        return _BUILT[self.name]


_BUILT: dict[str, bytes] = {}


# -- photos ---------------------------------------------------------------------------------


def camera_image(width: int, height: int, seed: int) -> Image.Image:
    """A camera-like RGB picture: smooth colour fields plus fine texture (compresses like a
    photo, ~100 KB at 800x600, unlike random blocks)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(25, 200, (5, 7, 3), dtype=np.uint8)
    small = Image.fromarray(coarse).resize(
        (max(1, width // 8), max(1, height // 8)), Image.Resampling.BICUBIC
    )
    pixels = np.array(small.resize((width, height), Image.Resampling.BILINEAR))
    tile = np.kron(rng.integers(0, 20, (128, 128), dtype=np.uint8), np.ones((2, 2), np.uint8))
    pixels += np.tile(tile, (height // 256 + 1, width // 256 + 1))[:height, :width, None]
    return Image.fromarray(pixels)


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "HostileCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    exif[0x0112] = orientation
    return exif


@functools.cache
def ordinary_photo(seed: int) -> bytes:
    """An 800x600 camera-like JPEG (quality 88, 4:2:0, with EXIF); seeds give different ones."""
    return craft.encode(camera_image(800, 600, seed), "JPEG", quality=88, exif=_exif())


@functools.cache
def _base(width: int = 96, height: int = 72) -> Image.Image:
    return camera_image(width, height, 7)


def _jpeg(**options) -> bytes:
    return craft.encode(_base(320, 240), "JPEG", quality=85, **options)


def _mpo() -> bytes:
    left, right = _base(320, 240), _base(320, 240).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return craft.encode(left, "MPO", save_all=True, append_images=[right])


def _png_palette() -> bytes:
    pal = _base().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return craft.encode(pal, "PNG", transparency=0)


def _png_16bit_gray() -> bytes:
    ramp = np.linspace(0, 65535, 96 * 72, dtype=np.uint16).reshape(72, 96)
    return craft.encode(Image.fromarray(ramp), "PNG")


def _png_16bit_rgb() -> bytes:
    return craft.png_16bit_rgb(np.asarray(_base(), dtype=np.uint16) * 257)


def _animated(fmt: str, **options) -> bytes:
    frames = [_base().rotate(angle) for angle in (0, 90, 180)]
    return craft.encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)


def _tiff_multipage() -> bytes:
    pages = [_base(), _base().convert("L"), _base(48, 48)]
    return craft.encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _ico() -> bytes:
    return craft.encode(_base(32, 32), "ICO")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not an image\n" * 50)
    return buffer.getvalue()


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _with_magic(magic: bytes, seed: int) -> bytes:
    return magic + np.random.default_rng(seed).bytes(20_000)


@functools.cache
def _jpeg_2000_scans() -> bytes:
    progressive = craft.encode(camera_image(1024, 1024, 3), "JPEG", quality=85, progressive=True)
    return craft.jpeg_with_extra_scans(progressive, 2000)


@functools.cache
def _jpeg_300_comments() -> bytes:
    data = craft.jpeg_with_comments(_jpeg(), 300)
    assert len(data) <= MAX_UPLOAD_BYTES, "meant to pass the byte limit and test the structure"
    return data


@functools.cache
def _file_over_limit() -> bytes:
    data = _jpeg()
    return data + b"\x00" * (MAX_UPLOAD_BYTES + 1 - len(data))


@functools.cache
def png_16bit_square(side: int) -> bytes:
    """A small 16-bit grayscale PNG of ``side`` x ``side`` (7000: ~0.7 MB, 49 MP, just under the
    pixel limit) whose conversion to 8-bit RGB goes through float arrays: ~30 bytes a pixel."""
    return craft.png_16bit_gray_gradient(side, side)


@functools.cache
def png_1xn(height: int) -> bytes:
    """A 1 x ``height`` PNG (49,999,999: ~100 KB, just under the pixel limit): seconds of
    inflate, a row-pointer table of 8 bytes a row, an aspect ratio no resize expects."""
    return craft.png_repeated_rows(1, height, b"\x00\x80")


@functools.cache
def png_rgb_square(side: int) -> bytes:
    """An 8-bit RGB PNG of ``side`` x ``side`` (7000: ~1 MB, 196 MB decoded)."""
    return craft.png_rgb_gradient(side, side)


def png_16bit_7000() -> bytes:
    return png_16bit_square(7000)


def png_1x49999999() -> bytes:
    return png_1xn(49_999_999)


@functools.cache
def jpeg_progressive_48mp() -> bytes:
    """An 8000x6000 progressive JPEG (~9 MB): reduced-scale decoding still walks every scan
    over a full-size coefficient buffer."""
    return craft.encode(camera_image(8000, 6000, 5), "JPEG", quality=88, progressive=True)


@functools.cache
def jpeg_48mp() -> bytes:
    """An 8000x6000 baseline JPEG, what a 48 MP phone camera writes (~9 MB)."""
    return craft.encode(camera_image(8000, 6000, 4), "JPEG", quality=88, exif=_exif(6))


# Too big for the memory budget (413), or a decode cut at the time limit: both correct answers.
HEAVY_OK: tuple[Outcome, ...] = ((413, "image_too_large"), (422, "decode_timeout"))


def accepted_kinds() -> list[FileKind]:
    """Files phones and tools produce: every one must get 200."""
    ok = (200, None)

    def kind(name: str, description: str, make: Callable[[], bytes], **kw) -> FileKind:
        return FileKind(name, description, make, ok, **kw)

    return [
        kind("jpeg_baseline", "800x600 camera JPEG with EXIF", lambda: ordinary_photo(1)),
        kind("jpeg_progressive", "progressive JPEG (web exports)", lambda: _jpeg(progressive=True)),
        kind(
            "jpeg_exif_rotated",
            "EXIF orientation 6: a portrait phone photo stored landscape",
            lambda: craft.encode(_base(320, 240), "JPEG", exif=_exif(6)),
        ),
        kind(
            "jpeg_cmyk",
            "CMYK JPEG (print workflows)",
            lambda: craft.encode(_base().convert("CMYK"), "JPEG"),
        ),
        kind(
            "jpeg_grayscale",
            "8-bit grayscale JPEG",
            lambda: craft.encode(_base().convert("L"), "JPEG"),
        ),
        kind("jpeg_48mp", "8000x6000 phone photo, EXIF-rotated (~9 MB)", jpeg_48mp),
        kind(
            "jpeg_panorama",
            "8000x200 panorama",
            lambda: craft.encode(camera_image(8000, 200, 2), "JPEG", quality=85),
        ),
        kind(
            "jpeg_1x1",
            "a 1x1 JPEG",
            lambda: craft.encode(Image.new("RGB", (1, 1), "green"), "JPEG"),
        ),
        kind(
            "jpeg_named_txt",
            "a JPEG named notes.txt, part type text/plain",
            _jpeg,
            filename="notes.txt",
            content_type="text/plain",
        ),
        kind(
            "jpeg_wrong_part_type",
            "a JPEG whose part says application/pdf",
            _jpeg,
            content_type="application/pdf",
        ),
        kind(
            "jpeg_octet_stream",
            "a JPEG sent as application/octet-stream, no extension",
            _jpeg,
            filename="upload",
            content_type="application/octet-stream",
        ),
        kind("mpo", "MPO (stereo/multi-picture JPEG some phones write)", _mpo),
        kind(
            "png_rgba",
            "PNG with alpha",
            lambda: craft.encode(_base().convert("RGBA"), "PNG"),
            filename="shot.png",
            content_type="image/png",
        ),
        kind(
            "png_palette",
            "palette PNG with a transparent index",
            _png_palette,
            filename="p.png",
            content_type="image/png",
        ),
        kind(
            "png_gray_alpha",
            "grayscale + alpha PNG",
            lambda: craft.encode(_base().convert("LA"), "PNG"),
            filename="la.png",
            content_type="image/png",
        ),
        kind(
            "png_16bit_gray",
            "16-bit grayscale PNG",
            _png_16bit_gray,
            filename="16.png",
            content_type="image/png",
        ),
        kind(
            "png_16bit_rgb",
            "16-bit-per-channel RGB PNG (photo editors)",
            _png_16bit_rgb,
            filename="48bit.png",
            content_type="image/png",
        ),
        kind(
            "png_interlaced",
            "Adam7-interlaced PNG",
            lambda: craft.png_interlaced(np.asarray(_base())),
            filename="i.png",
            content_type="image/png",
        ),
        kind(
            "png_apng",
            "animated PNG (APNG)",
            lambda: _animated("PNG"),
            filename="a.png",
            content_type="image/png",
        ),
        kind(
            "webp_lossy",
            "lossy WebP",
            lambda: craft.encode(_base(), "WEBP", quality=80),
            filename="w.webp",
            content_type="image/webp",
        ),
        kind(
            "webp_lossless",
            "lossless WebP",
            lambda: craft.encode(_base(), "WEBP", lossless=True),
            filename="w.webp",
            content_type="image/webp",
        ),
        kind(
            "webp_animated",
            "animated WebP (3 frames)",
            lambda: _animated("WEBP", duration=100),
            filename="w.webp",
            content_type="image/webp",
        ),
        kind(
            "heic",
            "HEIC, as iPhones write",
            lambda: craft.encode(_base(320, 240), "HEIF", quality=80),
            filename="IMG_0042.HEIC",
            content_type="image/heic",
        ),
        kind(
            "gif_animated",
            "animated GIF (first frame is used)",
            lambda: _animated("GIF", duration=100),
            filename="g.gif",
            content_type="image/gif",
        ),
        kind(
            "bmp",
            "24-bit BMP",
            lambda: craft.encode(_base(), "BMP"),
            filename="b.bmp",
            content_type="image/bmp",
        ),
        kind(
            "tiff_multipage",
            "3-page TIFF (scanners)",
            _tiff_multipage,
            filename="t.tiff",
            content_type="image/tiff",
        ),
        kind(
            "polyglot_jpeg_zip",
            "a valid JPEG with a ZIP archive appended (the image is "
            "fine; the service never stores or serves it)",
            lambda: _jpeg() + _zip(),
        ),
        kind(
            "polyglot_jpeg_html",
            "a valid JPEG with an HTML/script trailer",
            lambda: _jpeg() + b"<html><script>alert(1)</script></html>",
        ),
    ]


def hostile_kinds() -> list[FileKind]:
    """Files that are not images, damaged images, and images built to be costly."""
    not_image = (415, "unsupported_media_type")
    corrupt = (422, "corrupt_image")
    too_large = (413, "image_too_large")
    complex_ = (422, "image_too_complex")
    return [
        FileKind("empty", "a file part with no bytes", lambda: b"", (400, "empty_file")),
        FileKind(
            "text",
            "plain text",
            lambda: b"field notes: knotweed by the river\n" * 20,
            not_image,
            filename="notes.txt",
            content_type="text/plain",
        ),
        FileKind(
            "pdf", "a PDF named .jpg", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n", not_image
        ),
        FileKind(
            "svg",
            "an SVG (XML; could carry script)",
            lambda: (
                b'<svg xmlns="http://www.'
                b'w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
            ),
            not_image,
            content_type="image/svg+xml",
        ),
        FileKind(
            "ico",
            "a Windows icon (Pillow reads it; the service does not accept it)",
            _ico,
            not_image,
            content_type="image/x-icon",
        ),
        FileKind(
            "html",
            "an HTML page",
            lambda: b"<!doctype html><html><body>hi</body></html>",
            not_image,
            content_type="text/html",
        ),
        FileKind("zip", "a ZIP archive", _zip, not_image),
        FileKind(
            "elf",
            "an ELF executable header",
            lambda: b"\x7fELF\x02\x01\x01" + bytes(500),
            not_image,
        ),
        FileKind(
            "truncated_jpeg",
            "the first half of a JPEG",
            lambda: _truncated(ordinary_photo(2)),
            corrupt,
        ),
        FileKind(
            "truncated_png",
            "the first half of a PNG",
            lambda: _truncated(craft.encode(camera_image(320, 240, 3), "PNG")),
            corrupt,
        ),
        FileKind(
            "truncated_webp",
            "the first half of a WebP",
            lambda: _truncated(craft.encode(camera_image(320, 240, 3), "WEBP")),
            corrupt,
        ),
        FileKind(
            "truncated_heic",
            "the first half of a HEIC",
            lambda: _truncated(craft.encode(camera_image(320, 240, 3), "HEIF")),
            corrupt,
        ),
        FileKind(
            "random_jpeg_magic",
            "JPEG magic bytes then 20 KB of noise (damaged image; "
            "415 also fits: no decoder recognises it)",
            lambda: _with_magic(b"\xff\xd8\xff\xe0", 1),
            corrupt,
            (not_image,),
        ),
        FileKind(
            "random_png_magic",
            "PNG signature then 20 KB of noise (as above)",
            lambda: _with_magic(craft.PNG_SIGNATURE, 2),
            corrupt,
            (not_image,),
        ),
        FileKind(
            "png_pixel_bomb",
            "PNG header claims 100,000 x 100,000",
            lambda: craft.png_file(100_000, 100_000, zlib.compress(bytes(64))),
            too_large,
        ),
        FileKind(
            "jpeg_dimension_bomb",
            "JPEG frame header claims 65,000 x 65,000",
            lambda: craft.jpeg_with_size(_jpeg(), 65_000, 65_000),
            too_large,
        ),
        FileKind(
            "gif_screen_bomb",
            "GIF logical screen of 65,535 x 65,535",
            lambda: craft.gif_with_screen(_base(), 65_535, 65_535),
            too_large,
        ),
        FileKind(
            "webp_dimension_bomb",
            "lossless WebP header claims 16,384 x 16,384",
            lambda: craft.webp_lossless_with_size(_base(), 16_384, 16_384),
            too_large,
        ),
        FileKind(
            "png_1x49999999",
            "1 x 49,999,999 PNG (~100 KB): passes the pixel limit; "
            "200 when its decode fits the memory budget, else 413, or 422 decode_timeout",
            png_1x49999999,
            (200, None),
            HEAVY_OK,
        ),
        FileKind(
            "png_16bit_7000",
            "16-bit 7000x7000 PNG (~0.7 MB, ~100 MB decoded): as above",
            png_16bit_7000,
            (200, None),
            HEAVY_OK,
        ),
        FileKind(
            "jpeg_2000_scans",
            "1024x1024 progressive JPEG with 2,000 scans (~0.2 MB)",
            _jpeg_2000_scans,
            complex_,
        ),
        FileKind(
            "jpeg_300_comments",
            "300 COM segments of 64 KiB (19.7 MB, under the byte limit) before the image data",
            _jpeg_300_comments,
            complex_,
        ),
        FileKind(
            "jpeg_icc_16mb",
            "a 16 MB ICC profile over 255 APP2 segments",
            lambda: craft.jpeg_with_huge_icc(_jpeg()),
            complex_,
        ),
        FileKind(
            "png_100k_text",
            "100,000 tEXt chunks before the image data (1.5 MB)",
            lambda: craft.png_with_text_chunks(_base(), 100_000),
            complex_,
            filename="t.png",
            content_type="image/png",
        ),
        FileKind(
            "png_ztxt_bomb",
            "a zTXt chunk inflating to 200 MB (~200 KB on disk); "
            "Pillow refuses it, so corrupt_image also fits",
            lambda: craft.png_ztxt_bomb(_base()),
            complex_,
            (corrupt,),
            filename="z.png",
            content_type="image/png",
        ),
        FileKind(
            "tiff_500k_strips",
            "64 x 500,000 TIFF with 500,000 strips (4 MB)",
            lambda: craft.tiff_many_strips(64, 500_000),
            complex_,
            filename="s.tif",
            content_type="image/tiff",
        ),
        FileKind(
            "gif_10k_frames",
            "GIF with 10,000 frames (2.4 MB); only the first is "
            "decoded, so 200, unless frame count is judged too complex",
            lambda: craft.gif_many_frames(_base(16, 16), 10_000),
            (200, None),
            (complex_,),
            filename="g.gif",
            content_type="image/gif",
        ),
        FileKind(
            "file_over_limit",
            "a JPEG padded to 20 MiB + 1 byte",
            _file_over_limit,
            (413, "file_too_large"),
        ),
    ]


def file_kinds() -> list[FileKind]:
    return accepted_kinds() + hostile_kinds()


def hostile_files() -> dict[str, bytes]:
    """Name -> bytes of every hostile kind (not images, damaged, costly by structure)."""
    return {kind.name: kind.data() for kind in hostile_kinds()}


def expensive_files() -> dict[str, bytes]:
    """Valid files that pass every check at the default settings (under 50 MP, 20 MiB, and
    each one's decode within the default 384 MiB memory budget) but cost a lot to decode:
    the "heavy lane" workload. (The 16-bit 7000x7000 and 1 x 49,999,999 PNGs of the hostile
    corpus need more than the budget, so they are refused before decoding.)"""
    return {
        "png_16bit_3500x3500": png_16bit_square(3500),
        "png_1x12000000": png_1xn(12_000_000),
        "png_rgb_6500x6500": png_rgb_square(6500),
        "jpeg_progressive_8000x6000": jpeg_progressive_48mp(),
    }
