"""Write the sample photos the README's curl commands send (``make samples``).

They are the demo checkpoint's own kind of picture (``training.demo.make_demo_photo``: pale
umbel-like clusters on a vegetation texture for "invasive", the texture alone otherwise),
enlarged to phone-photo proportions, plus a HEIC copy (what iPhones send) and a text file that
is not an image at all (its batch result is a per-file 415). Deterministic: the same seed gives
the same pictures; the seeds are ones the demo checkpoint scores clearly (plot-17 about 0.9
invasive, plot-18 about 0.06), since the demo model gets a fair share of its own pictures wrong.

    python examples/make_photos.py [--output examples/photos]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from training.demo import make_demo_photo

OUTPUT = Path(__file__).resolve().parent / "photos"
SIZE = (800, 600)  # enlarged from the demo's 96x72: small files, photo-like proportions
NOTES = "plot 17: hogweed? umbels by the ditch, photos 1-3\n"


def photo(invasive: bool, seed: int) -> Image.Image:
    small = make_demo_photo(invasive, np.random.default_rng(seed))
    return small.resize(SIZE, Image.Resampling.BICUBIC)


def write_samples(output: Path = OUTPUT) -> list[Path]:
    """Write the samples into ``output``; return their paths."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    output.mkdir(parents=True, exist_ok=True)
    invasive, other = photo(True, seed=23), photo(False, seed=28)
    files = {
        "plot-17.jpg": lambda p: invasive.save(p, "JPEG", quality=85),
        "plot-18.jpg": lambda p: other.save(p, "JPEG", quality=85),
        "IMG_0042.HEIC": lambda p: invasive.save(p, "HEIF", quality=80),
        "notes.txt": lambda p: p.write_text(NOTES, encoding="utf-8"),
    }
    written = []
    for name, write in files.items():
        path = output / name
        write(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder to write into")
    args = parser.parse_args()
    for path in write_samples(args.output):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
