"""Write a resized copy of a Kaggle-layout dataset: the decode cache measured at other sizes.

Not a test, and never a source of accuracy figures: upscaled tiles add pixels, not detail. Used
for the "phone-size photos" row of docs/benchmarks.md (training section):

    python benchmarks/training_resized_copy.py --size 4032x3024 --dest /tmp/hogweed-12mp
    nice python benchmarks/train_cv.py --data /tmp/hogweed-12mp --skip-cv --speed-workers 2,0 \
        --summary benchmarks/results/train_speed_12mp.json

Write the copy outside the repository (it is derived from the shared data and large).
"""

from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hogweed-dev"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED_DATA)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--size", default="4032x3024", help="WIDTHxHEIGHT")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    (args.dest / "train").mkdir(parents=True, exist_ok=True)
    for csv_file in args.source.glob("*.csv"):
        shutil.copy2(csv_file, args.dest / csv_file.name)

    def resize(src: Path) -> None:
        with Image.open(src) as img:
            img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(
                args.dest / "train" / src.name, quality=args.quality)

    sources = sorted((args.source / "train").glob("*.jpg"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(resize, sources))
    print(f"wrote {len(sources)} photos of {width}x{height} to {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
