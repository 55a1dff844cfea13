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

# What ends a decode that spent its CPU budget: SIGPROF's default action kills the process at
# once, even inside Pillow's C code, where a Python handler would wait for the call to return.
CPU_BUDGET_SIGNAL = signal.SIGPROF


def start_decoder(niceness: int) -> None:
    """Process initializer: lower this process's CPU priority by ``niceness``.

    The heavy lane runs niced so that a costly image borrows the CPU only when the model and
    ordinary photos leave it idle. Ctrl-C in a terminal signals the whole process group: the
    decoders ignore it, so that the service can drain, and stop them when it is done.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(CPU_BUDGET_SIGNAL, signal.SIG_DFL)
    if niceness:
        os.nice(niceness)


def decode_upload(
    data: bytes, spec: PreprocessSpec, max_pixels: int, cpu_budget_s: float | None = None
) -> np.ndarray:
    """Raises ``model.imaging.ImageDecodeError`` (picklable, keeps its code) for bad images.

    ``cpu_budget_s``: CPU time (this process's, all threads) the decode may use; when it is
    spent, :data:`CPU_BUDGET_SIGNAL` kills the process. CPU time, not wall time: a niced decode
    that waited for a busy CPU has not shown that the image is costly.
    """
    if cpu_budget_s:
        signal.setitimer(signal.ITIMER_PROF, cpu_budget_s)
    try:
        return prepare_pixels(data, spec, max_pixels=max_pixels)
    finally:
        if cpu_budget_s:
            signal.setitimer(signal.ITIMER_PROF, 0)
