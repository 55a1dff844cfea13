"""What runs inside a decode process: one upload's bytes -> the model-size pixel array.

Kept apart from :mod:`app.decoding` so that a decode process imports only Pillow, numpy and
:mod:`model.preprocessing` (no torch, no FastAPI): each process stays small, and a fresh one
(after a slow image got its process killed) is ready in milliseconds.
"""

from __future__ import annotations

import os
import signal

import numpy as np

from model.preprocessing import PreprocessSpec, prepare_pixels


def start_decoder(niceness: int) -> None:
    """Process initializer: lower this process's CPU priority by ``niceness``.

    The heavy lane runs niced so that a costly image borrows the CPU only when the model and
    ordinary photos leave it idle. Ctrl-C in a terminal signals the whole process group: the
    decoders ignore it, so that the service can drain, and stop them when it is done.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)


def decode_upload(data: bytes, spec: PreprocessSpec, max_pixels: int) -> np.ndarray:
    """Raises ``model.imaging.ImageDecodeError`` (picklable, keeps its code) for bad images."""
    return prepare_pixels(data, spec, max_pixels=max_pixels)
