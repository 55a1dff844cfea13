import io

import pytest
from PIL import Image

from benchmarks.serving.fixtures import (
    PhotosMissing,
    build_checkpoint,
    build_payload_sets,
    find_photos,
    reencode,
)
from benchmarks.serving.multipart import BOUNDARY
from model.checkpoint import load_checkpoint


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 60), (40 * i, 120, 200)).save(folder / f"p{i}.jpg", quality=90)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_find_photos_takes_sorted_jpegs_up_to_count(photo_dir):
    assert [p.name for p in find_photos(photo_dir, count=2)] == ["p0.jpg", "p1.jpg"]


def test_missing_photos_say_where_they_were_expected(tmp_path):
    with pytest.raises(PhotosMissing, match="--photos"):
        find_photos(tmp_path / "nowhere")


def test_payload_sets_hold_original_and_phone_sized_uploads(photo_dir, tmp_path):
    photos = find_photos(photo_dir)
    sets = build_payload_sets(photos, tmp_path / "work")
    assert [s.name for s in sets] == ["photo-80x60", "phone-4032x3024"]
    original, phone = sets
    assert original.images[0] == photos[0].read_bytes()
    with Image.open(io.BytesIO(phone.images[1])) as img:
        assert (img.format, img.size) == ("JPEG", (4032, 3024))
    bodies = sorted(p.name for p in phone.body_dir.iterdir())
    assert bodies == ["body_000.bin", "body_001.bin", "body_002.bin"]
    body = (phone.body_dir / "body_002.bin").read_bytes()
    assert body.startswith(f"--{BOUNDARY}\r\n".encode()) and phone.images[2] in body
    assert b'name="file"; filename="p2.jpg"' in body


def test_raw_payload_bodies_are_the_photos_themselves(photo_dir, tmp_path):
    photos = find_photos(photo_dir)
    (raw,) = build_payload_sets(photos, tmp_path / "work", kinds=("photo-raw",))
    assert (raw.name, raw.content_type, raw.raw) == ("photo-80x60-raw", "image/jpeg", True)
    bodies = sorted(raw.body_dir.glob("body_*.bin"))
    assert [b.read_bytes() for b in bodies] == [p.read_bytes() for p in photos] == raw.images


def test_reencode_keeps_the_picture(photo_dir):
    data = reencode(photo_dir / "p2.jpg", (160, 120))
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (160, 120)
        r, g, b = img.getpixel((80, 60))
    assert abs(r - 80) < 8 and abs(g - 120) < 8 and abs(b - 200) < 8


def test_checkpoint_is_a_real_one_with_metadata(tmp_path):
    path = build_checkpoint(tmp_path / "c.safetensors", "resnet18", 64)
    loaded = load_checkpoint(path)
    assert loaded.metadata.arch == "resnet18"
    assert loaded.metadata.input_size == 64
    assert loaded.metadata.positive_class in loaded.metadata.class_names
