"""A small, real demo checkpoint from generated photos, trained by the real ``fit`` code.

"Invasive" pictures show clusters of pale, flower-like blobs (the look of hogweed umbels) on a
green-and-brown vegetation texture; "not invasive" pictures show the texture alone. The task is
easy enough that a couple of epochs at 64 px learn it, so ``make serve`` and the tests get a
checkpoint that behaves like a trained one (metadata ``demo=True``) in a few seconds, offline.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_CLASSES = ("not_invasive", "invasive")


def make_demo_photo(invasive: bool, rng: np.random.Generator, size: tuple[int, int] = (96, 72)):
    """One synthetic field photo (PIL RGB)."""
    w, h = size
    base = np.array([rng.uniform(50, 90), rng.uniform(100, 150), rng.uniform(35, 70)])
    noise = rng.normal(0, 22, size=(h // 4 + 1, w // 4 + 1, 3))
    texture = np.kron(noise, np.ones((4, 4, 1)))[:h, :w]  # blotchy leaves, not pixel noise
    pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):  # brown soil/stem patches in both classes
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(3, 10)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(110, 85, 50))
    if invasive:
        for _ in range(rng.integers(2, 5)):  # umbels: clusters of small pale discs
            cx, cy = rng.uniform(8, w - 8), rng.uniform(8, h - 8)
            for _ in range(rng.integers(5, 10)):
                x, y = cx + rng.normal(0, 4), cy + rng.normal(0, 4)
                r = rng.uniform(1.5, 3.5)
                tone = int(rng.uniform(215, 250))
                draw.ellipse((x - r, y - r, x + r, y + r), fill=(tone, tone, tone - 15))
    return img.filter(ImageFilter.SMOOTH)


def write_demo_dataset(
    root: str | Path,
    *,
    images_per_class: int = 24,
    layout: str = "kaggle",
    seed: int = 0,
    size: tuple[int, int] = (96, 72),
) -> Path:
    """Generated photos in Kaggle layout (``train/`` + ``train_labels.csv``) or class folders."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(2 * images_per_class):
        invasive = i % 2 == 1
        name = f"{i + 1}"
        if layout == "kaggle":
            path = root / "train" / f"{name}.jpg"
        elif layout == "folders":
            path = root / DEMO_CLASSES[int(invasive)] / f"{name}.jpg"
        else:
            raise ValueError(f"layout must be 'kaggle' or 'folders', got {layout!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        make_demo_photo(invasive, rng, size).save(path, quality=90)
        rows.append((name, int(invasive)))
    if layout == "kaggle":
        with (root / "train_labels.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("name", "invasive"), *rows])
    return root


def build_demo_checkpoint(
    output: str | Path,
    *,
    image_size: int = 64,
    epochs: int = 2,
    images_per_class: int = 24,
    arch: str = "resnet18",
    seed: int = 0,
) -> Path:
    """Generate a dataset, train ``arch`` on it through ``training.fit``, write ``output``."""
    from training.fit import FitConfig, fit
    from training.state import state_path

    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="invasive-demo-") as tmp:
        data = write_demo_dataset(Path(tmp) / "data", images_per_class=images_per_class, seed=seed)
        config = FitConfig(
            data=data, output=output, arch=arch, weights="none", image_size=image_size,
            epochs=epochs, batch_size=8, lr=1e-3, warmup_epochs=0.0, patience=epochs,
            seed=seed, val_fraction=0.25, workers=0, demo=True,  # demo: no log (see fit)
        )
        fit(config)
    state_path(output).unlink(missing_ok=True)  # nothing to resume for a demo; keep models/ tidy
    return output
