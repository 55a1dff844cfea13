"""Score image files exactly as the service does: ``prepare_input`` -> ``Classifier``.

Decoding runs in a thread pool (Pillow releases the GIL) one batch ahead of the model. Optional
test-time augmentation averages the probabilities of each image and its mirror image.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.imaging import ImageDecodeError
from model.inference import Classifier
from model.preprocessing import prepare_input
from training.data import decode_failure
from training.errors import TrainingError


def load_classifier(checkpoint: Path, *, device: str = "auto", precision: str = "auto",
                    engine: str = "eager") -> Classifier:
    """``Classifier.from_checkpoint``, its refusals as one-line user errors. The service's own
    header check (``model.checkpoint.check_checkpoint``) runs first: it names the tensors that do
    not fit (``'fc.bias' is (2,), expected (3,)``), where a full load's message stops at
    "Error(s) in loading state_dict for ResNet:"."""
    from model.checkpoint import check_checkpoint

    # An architecture it cannot build raises ValueError: the load below words that itself.
    with contextlib.suppress(ValueError):
        check_checkpoint(checkpoint)
    try:
        return Classifier.from_checkpoint(checkpoint, device=device, precision=precision,
                                          engine=engine)
    except ValueError as exc:  # --device cuda without CUDA, --precision fp16 on a CPU
        raise TrainingError(str(exc)) from None


def score_files(
    classifier: Classifier,
    paths: list[Path],
    *,
    batch_size: int = 32,
    threads: int = 2,
    flip_tta: bool = False,
    desc: str = "scoring",
) -> tuple[np.ndarray, dict[int, str]]:
    """Probabilities (N, classes) for ``paths``; unreadable files get NaN rows and are listed."""
    probs = np.full((len(paths), len(classifier.metadata.class_names)), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}

    def load(i: int) -> torch.Tensor | None:
        try:
            return prepare_input(paths[i], classifier.spec)
        except ImageDecodeError as exc:
            failures[i] = decode_failure(paths[i], exc.message)
        except OSError as exc:
            failures[i] = f"cannot read the file ({exc})"
        return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", mininterval=1.0) as bar:
        tensors = pool.map(load, range(len(paths)))  # lazily consumed: decoding runs ahead
        for start in range(0, len(paths), batch_size):
            idx, batch = [], []
            for i in range(start, min(start + batch_size, len(paths))):
                tensor = next(tensors)
                if tensor is not None:
                    idx.append(i)
                    batch.append(tensor)
            if batch:
                x = torch.stack(batch)
                p = classifier.predict_probabilities(x)
                if flip_tta:
                    p = (p + classifier.predict_probabilities(x.flip(-1))) / 2
                probs[idx] = p
            bar.update(min(batch_size, len(paths) - start))
    return probs, failures
