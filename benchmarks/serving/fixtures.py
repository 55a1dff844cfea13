"""What every server is fed: one checkpoint and the same photos, as files and multipart bodies.

Photos come from ``../shared/data/hogweed-dev/train`` (800x600 JPEG) and are never copied into
the repository; the phone-sized set (4032x3024, the 12 MP of a typical phone camera) is
re-encoded from them at run time into the run's work directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.serving.multipart import content_type, multipart_body

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PHOTO_DIR = REPO_ROOT.parent / "shared" / "data" / "hogweed-dev" / "train"
PHONE_SIZE = (4032, 3024)


class PhotosMissing(RuntimeError):
    pass


@dataclass
class PayloadSet:
    """Pre-built request bodies of one kind of upload, ready for wrk and for the ceiling loop."""

    name: str  # "photo-800x600", "phone-4032x3024"
    body_dir: Path  # body_000.bin ... as the Lua script expects
    images: list[bytes]  # the raw files, for the in-process ceiling
    content_type: str
    raw: bool = False  # the bodies are the images themselves, not multipart


    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def mean_bytes(self) -> int:
        return sum(len(b) for b in self.images) // max(1, len(self.images))


def build_checkpoint(path: Path, arch: str = "resnet18", input_size: int = 224) -> Path:
    """Random-init weights with real metadata: speed does not depend on what the weights learned."""
    import torch

    from model.architectures import build_model
    from model.checkpoint import CheckpointMetadata, save_checkpoint

    torch.manual_seed(0)
    metadata = CheckpointMetadata(
        arch=arch,
        class_names=["other", "hogweed"],
        positive_class="hogweed",
        input_size=input_size,
        training_config={"note": "random init, built by benchmarks.serving for speed only"},
        demo=True,
    )
    return save_checkpoint(path, build_model(arch, num_classes=2), metadata)


def find_photos(photo_dir: Path = DEFAULT_PHOTO_DIR, count: int = 16) -> list[Path]:
    photos = sorted(photo_dir.glob("*.jpg"))[:count] if photo_dir.is_dir() else []
    if not photos:
        raise PhotosMissing(
            f"no benchmark photos: expected *.jpg in {photo_dir} (the shared hogweed-dev data set "
            f"beside the repository). Pass --photos DIR to use another folder of JPEGs."
        )
    return photos


def reencode(src: Path, size: tuple[int, int], quality: int = 90) -> bytes:
    """The photo upscaled to ``size`` and saved as a phone would (baseline JPEG, 4:2:0)."""
    import io

    with Image.open(src) as img:
        big = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def write_payload_set(
    name: str, images: list[bytes], names: list[str], work_dir: Path, raw: bool = False
) -> PayloadSet:
    body_dir = work_dir / name
    body_dir.mkdir(parents=True, exist_ok=True)
    for i, (data, filename) in enumerate(zip(images, names, strict=True)):
        body = data if raw else multipart_body("file", filename, data)
        (body_dir / f"body_{i:03d}.bin").write_bytes(body)
    return PayloadSet(name=name, body_dir=body_dir, images=images,
                      content_type="image/jpeg" if raw else content_type(), raw=raw)


def build_payload_sets(
    photos: list[Path], work_dir: Path, kinds: tuple[str, ...] = ("photo", "phone")
) -> list[PayloadSet]:
    names = [p.name for p in photos]
    sets = []
    originals = [p.read_bytes() for p in photos]
    with Image.open(photos[0]) as first:
        w, h = first.size
    if "photo" in kinds:
        sets.append(write_payload_set(f"photo-{w}x{h}", originals, names, work_dir))
    if "photo-raw" in kinds:  # the same photos, so the same list: the ceiling is shared
        sets.append(write_payload_set(f"photo-{w}x{h}-raw", originals, names, work_dir, raw=True))
    if "phone" in kinds:
        images = [reencode(p, PHONE_SIZE) for p in photos]
        w, h = PHONE_SIZE
        sets.append(write_payload_set(f"phone-{w}x{h}", images, names, work_dir))
    return sets
