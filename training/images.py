"""Photos to uint8 model-size tensors: the decode cache, and the plain full-decode baseline.

The cache decodes every photo once through :func:`model.preprocessing.prepare_input` — the very
function the service uses, which decodes JPEGs at reduced scale (Pillow ``draft``) — and keeps the
resized uint8 images in memory (``S x S x 3`` bytes each: 645 photos at 160 px are 50 MB), or on
disk as one ``.npy`` file keyed by the data fingerprint so the next run skips decoding entirely.
Augmentation (``training.augment``) then works on those small tensors, a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from model.imaging import ImageDecodeError, decode_image
from model.pixel_limit import DEFAULT_MAX_PIXELS, configured_max_pixels
from model.preprocessing import PreprocessSpec, image_to_tensor, prepare_input, resize_for_model
from training import distributed
from training.data import decode_failure
from training.errors import TrainingError


def decode_images(
    paths: list[Path], spec: PreprocessSpec, *, threads: int = 2, desc: str = "decoding"
) -> tuple[torch.Tensor, dict[int, str]]:
    """All ``paths`` as one uint8 (N, 3, S, S) tensor; unreadable ones stay zero, listed by index.

    Threads pay off because Pillow releases the GIL while it decodes and resizes.
    """
    size = spec.input_size
    out = torch.zeros((len(paths), 3, size, size), dtype=torch.uint8)
    failures = _decode_each(paths, spec, threads, desc, keep=out)
    return out, failures


def find_unreadable(paths: list[Path], spec: PreprocessSpec, *, threads: int = 2,
                    desc: str = "checking") -> dict[int, str]:
    """The photos that do not decode, by index, keeping no pixels: ``--cache none`` decodes
    during training, where one bad photo would end the run with a worker's traceback."""
    return _decode_each(paths, spec, threads, desc, keep=None)


def _decode_each(paths: list[Path], spec: PreprocessSpec, threads: int, desc: str,
                 keep: torch.Tensor | None) -> dict[int, str]:
    failures: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            image = prepare_input(paths[i], spec)
            if keep is not None:
                keep[i] = image
        except ImageDecodeError as exc:
            failures[i] = decode_failure(paths[i], exc.message)
        except OSError as exc:
            failures[i] = f"cannot read the file ({exc})"

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(tqdm(pool.map(one, range(len(paths))), total=len(paths), desc=desc, leave=False,
                  unit="img", mininterval=1.0, disable=not distributed.is_main()))
    return failures


def default_cache_dir() -> Path:
    """Where ``--cache disk`` keeps decoded images: the user's cache, not the data folder (which
    may be read-only, as in the compose ``train`` service). Entries are keyed by each file's
    absolute path, size and mtime, so one cache serves any number of datasets safely."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "invasive-species" / "decode-cache"


def cached_decode(
    paths: list[Path],
    spec: PreprocessSpec,
    *,
    threads: int = 2,
    cache_dir: Path | None = None,
) -> tuple[torch.Tensor, dict[int, str]]:
    """:func:`decode_images`, reusing ``cache_dir/<key>.npy`` when the same files were decoded."""
    if cache_dir is None:
        return decode_images(paths, spec, threads=threads)
    key = _cache_key(paths, spec)
    array_file, meta_file = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if array_file.is_file() and meta_file.is_file():
        failures = {int(k): v for k, v in json.loads(meta_file.read_text())["failures"].items()}
        return torch.from_numpy(np.load(array_file)), failures
    images, failures = decode_images(paths, spec, threads=threads)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = array_file.with_suffix(".tmp.npy")
        np.save(tmp, images.numpy())
        tmp.replace(array_file)
        meta_file.write_text(json.dumps({"count": len(paths), "size": spec.input_size,
                                         "failures": {str(k): v for k, v in failures.items()}}))
    except OSError as exc:
        raise TrainingError(
            f"cannot write the decode cache in {cache_dir} ({exc.strerror or exc}); "
            "pass a writable --cache-dir, or use --cache memory"
        ) from None
    return images, failures


def _cache_key(paths: list[Path], spec: PreprocessSpec) -> str:
    limit = configured_max_pixels()  # which photos decode at all (a failure is cached too)
    tag = "" if limit == DEFAULT_MAX_PIXELS else f" max_pixels={limit}"  # old keys stay valid
    digest = hashlib.sha256(f"v1 {spec.input_size} {spec.resize}{tag}\n".encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class CachedImages(Dataset):
    """Items ``(uint8 image, label)`` from the in-memory decode cache (augmented per batch)."""

    def __init__(self, images: torch.Tensor, labels: list[int]) -> None:
        self.images, self.labels = images, torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class FullDecodeImages(Dataset):
    """The plain baseline: decode each full-size photo again every epoch (no draft, no cache)."""

    def __init__(self, paths: list[Path], labels: list[int], spec: PreprocessSpec) -> None:
        self.paths, self.labels, self.spec = paths, torch.tensor(labels), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = decode_image(self.paths[i])  # no min_size: the full-size decode, every time
        return image_to_tensor(resize_for_model(img, self.spec.input_size)), self.labels[i]
