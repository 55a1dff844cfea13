"""Decoding plain JPEGs on the model's device (``model.device_jpeg``) gives the pixels the CPU
path (Pillow, ``prepare_pixels``) gives, and only plain JPEGs are taken.

Run here with torchvision's CPU decoder (libjpeg-turbo); the nvJPEG run of the same code is in
``tests/gpu/test_cuda.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from model.device_jpeg import (
    MAX_DEVICE_PIXELS,
    decode_batch,
    decodes_in_batch,
    draft_scale,
    orient,
)
from model.inspection import inspect_image
from model.preprocessing import PreprocessSpec, prepare_pixels
from tests.app.images import field_photo, photo

CPU = torch.device("cpu")


def jpeg(img: Image.Image, orientation: int = 1, **save) -> bytes:
    buffer = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    img.save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(50, 40), (224, 224), (500, 300), (800, 600), (2000, 900),
                                  (4032, 3024)])
def test_draft_scale_is_pillows(size):
    img = Image.open(io.BytesIO(jpeg(Image.new("RGB", size, (10, 200, 30)))))
    img.draft("RGB", (224, 224))
    scale = draft_scale(*size, 224)
    assert img.size == (-(-size[0] // scale), -(-size[1] // scale))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_exif_transpose(orientation):
    stored = photo((37, 23), seed=orientation)  # not square: a transpose must show
    data = jpeg(stored, orientation)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    as_stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got = orient(torch.from_numpy(as_stored.copy()).permute(2, 0, 1), orientation)
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), want)


def test_decoded_batch_matches_the_cpu_path():
    spec = PreprocessSpec(input_size=224)
    sizes = [(160, 120), (800, 600), (1200, 1000), (2000, 1500)]  # draft 1 (upsampled), 2, 4, 8
    images = [jpeg(field_photo(size, seed=i), orientation=1 + 5 * (i % 2))
              for i, size in enumerate(sizes)]
    orientations = [inspect_image(data, 224).orientation for data in images]
    assert orientations == [1, 6, 1, 6]
    decoded = decode_batch(images, orientations, 224, CPU)
    for data, got in zip(images, decoded, strict=True):
        assert got is not None and got.shape == (3, 224, 224) and got.dtype == torch.uint8
        want = prepare_pixels(data, spec).astype(np.int16)
        diff = np.abs(got.permute(1, 2, 0).numpy().astype(np.int16) - want)
        # The scaled IDCT against a block average: 0.2-0.45 levels on the dev photos.
        assert diff.mean() < 0.75, diff.mean()
        assert np.percentile(diff, 99) <= 4


def test_an_image_the_decoder_fails_on_is_none_and_the_others_decode():
    good = jpeg(photo((300, 200), seed=1))
    broken = good[:200] + b"\x00" * 50 + b"\xff\xd9"  # tables intact, no frame left
    decoded = decode_batch([good, broken, good], [1, 1, 1], 64, CPU)
    assert decoded[1] is None
    assert decoded[0] is not None and torch.equal(decoded[0], decoded[2])


def test_only_plain_light_jpegs_go_to_the_device():
    img = photo((400, 300), seed=3)
    plain = inspect_image(jpeg(img), 224)
    assert plain.plain_jpeg and decodes_in_batch(plain)
    assert plain.source_pixels == 400 * 300

    not_plain = {
        "progressive": jpeg(img, progressive=True),
        "grayscale": jpeg(img.convert("L")),
        "cmyk": jpeg(img.convert("CMYK")),
        "png": _png(img),
    }
    for name, data in not_plain.items():
        cost = inspect_image(data, 224)
        assert not cost.plain_jpeg and not decodes_in_batch(cost), name

    cut = jpeg(img)[:-2]  # no EOI: Pillow decides what a cut file gets
    assert not inspect_image(cut, 224).plain_jpeg


def test_large_photos_stay_with_pillow():
    cost = inspect_image(jpeg(Image.new("RGB", (6000, 4500), (20, 90, 40))), 224)
    assert cost.plain_jpeg and cost.source_pixels > MAX_DEVICE_PIXELS
    assert not decodes_in_batch(cost)


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
