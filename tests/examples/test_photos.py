"""The sample photos of the README's requests and of ``make try`` exist, are what they claim,
and ``make samples`` can rebuild them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "examples" / "photos"


def _load_make_photos():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import make_photos
    finally:
        sys.path.remove(str(REPO / "examples"))
    return make_photos


def test_every_file_the_readme_and_make_try_send_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sent = set(re.findall(r"-F \w+=@(\S+)", readme))
    assert sent, "the README sends photos with curl -F"
    assert {p for p in sent if not (REPO / p).is_file()} == set()
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    from_make = set(re.findall(r"=@\$\(PHOTOS\)/(\S+)", makefile))
    assert from_make, "make try sends photos"
    assert {p for p in from_make if not (PHOTOS / p).is_file()} == set()


def test_make_samples_writes_the_committed_set(tmp_path):
    written = _load_make_photos().write_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in PHOTOS.iterdir())


@pytest.mark.parametrize("name", ["plot-17.jpg", "plot-18.jpg", "IMG_0042.HEIC"])
def test_sample_photos_decode_as_the_service_decodes_them(name):
    from model.imaging import decode_image

    image = decode_image((PHOTOS / name).read_bytes())
    assert image.size == (800, 600)


def test_notes_is_not_an_image():
    from model.imaging import ImageDecodeError, decode_image

    with pytest.raises(ImageDecodeError) as caught:
        decode_image((PHOTOS / "notes.txt").read_bytes())
    assert caught.value.code == "unsupported_media_type"
