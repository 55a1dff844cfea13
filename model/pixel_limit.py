"""The decompression-bomb limit: the largest width x height any part of the project decodes.

A module of its own, with no imports beyond the standard library, so that ``invasive-train``
can check the setting at start without importing Pillow.
"""

from __future__ import annotations

import os

DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo fits; a decompression bomb does not
MAX_PIXELS_ENV = "INVASIVE_MAX_IMAGE_PIXELS"


def configured_max_pixels() -> int:
    """The pixel limit wherever no caller names one (offline ``fit``, ``predict``, ``eda``):
    the service's own setting ``INVASIVE_MAX_IMAGE_PIXELS`` when the environment sets it, so
    that offline scoring accepts and refuses the images the service does; else the default.
    A malformed value is a ValueError naming the variable (the CLI reports it at start)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels, at "
                         f"least 1 (default {DEFAULT_MAX_PIXELS:,})")
    return value
