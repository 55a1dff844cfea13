"""Decoding: every Pillow mode to RGB, EXIF rotation, pixel limit, bad input codes, draft."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.imaging import ImageDecodeError, decode_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt", "colour"),
    [
        ("RGB", "PNG", (10, 200, 30)),
        ("L", "PNG", 128),
        ("RGBA", "PNG", (255, 0, 0, 255)),
        ("LA", "PNG", (60, 255)),
        ("P", "PNG", 3),
        ("CMYK", "JPEG", (0, 255, 255, 0)),
        ("I;16", "PNG", 65535),
    ],
)
def test_every_mode_becomes_8bit_rgb(mode, fmt, colour):
    img = decode_image(encode(Image.new(mode, (20, 10), colour), fmt))
    assert img.mode == "RGB" and img.size == (20, 10)
    assert np.asarray(img).dtype == np.uint8


def test_transparency_becomes_white_and_16bit_scales():
    clear = decode_image(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"))
    assert clear.getpixel((0, 0)) == (255, 255, 255)
    white16 = decode_image(encode(Image.new("I;16", (4, 4), 65535), "PNG"))
    assert white16.getpixel((0, 0)) == (255, 255, 255)


def test_a_bmp_whose_alpha_was_left_at_zero_is_read_opaque():
    """Writers often leave a 32-bit BMP's alpha at 0; viewers show it opaque. Honouring it
    scored a blank white picture."""
    import struct

    bgra = bytes([10, 160, 30, 0]) * (4 * 3)  # blue, green, red, alpha 0
    info = struct.pack("<IiiHHIIiiII", 56, 4, 3, 1, 32, 3, len(bgra), 2835, 2835, 0, 0)
    info += struct.pack("<4I", 0xFF0000, 0xFF00, 0xFF, 0xFF000000)  # BITFIELDS with alpha
    offset = 14 + len(info)
    bmp = b"BM" + struct.pack("<IHHI", offset + len(bgra), 0, 0, offset) + info + bgra
    assert Image.open(io.BytesIO(bmp)).mode == "RGBA"
    assert decode_image(bmp).getpixel((0, 0)) == (30, 160, 10)


def test_floating_point_pixels_in_0_to_1_scale_to_the_full_range():
    half = decode_image(encode(Image.new("F", (4, 4), 0.5), "TIFF"))
    assert half.getpixel((0, 0)) == (128, 128, 128)
    bright = decode_image(encode(Image.new("F", (4, 4), 200.0), "TIFF"))  # 0..255 floats
    assert bright.getpixel((0, 0)) == (200, 200, 200)
    marked = np.full((4, 4), 0.5, dtype=np.float32)
    marked[0, 0], marked[0, 1] = np.nan, np.inf  # "no data" marks must not set the range
    decoded = decode_image(encode(Image.fromarray(marked, "F"), "TIFF"))
    assert decoded.getpixel((3, 3)) == (128, 128, 128)
    assert decoded.getpixel((0, 0)) == (0, 0, 0)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert upright.size == (20, 40)


def test_pixel_limit_and_bad_inputs_have_stable_codes():
    big = encode(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(big, max_pixels=50_000)
    assert err.value.code == "image_too_large" and err.value.status == 413
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"")
    assert err.value.code == "empty_file"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"%PDF-1.4 not an image")
    assert err.value.code == "unsupported_media_type" and err.value.status == 415
    truncated = encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200]
    with pytest.raises(ImageDecodeError) as err:
        decode_image(truncated)
    assert err.value.code == "corrupt_image"


def test_draft_decodes_large_jpegs_at_reduced_scale_but_never_below_min_size():
    photo = encode(Image.new("RGB", (800, 600), (40, 120, 40)), "JPEG")
    assert decode_image(photo).size == (800, 600)
    reduced = decode_image(photo, min_size=160)
    assert reduced.size in ((400, 300), (200, 150)) or min(reduced.size) >= 160
    assert min(reduced.size) >= 150 and reduced.size[0] < 800


def test_decoding_on_many_threads_leaves_the_warning_filters_alone():
    """The service decodes on inference threads while the inspection thread opens other images;
    a ``warnings.catch_warnings()`` per open (not thread-safe) left a global "ignore every
    warning" filter behind in 2 of 3 such runs."""
    import threading
    import warnings

    from model.inspection import inspect_image

    data = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 40)).save(data, format="PNG")
    png = data.getvalue()
    before = list(warnings.filters)

    def work(decode: bool) -> None:
        for _ in range(300):
            decode_image(png) if decode else inspect_image(png, 32, 10_000_000)

    threads = [threading.Thread(target=work, args=(i < 2,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before
