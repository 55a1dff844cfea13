"""Device names both sides accept, checked without importing torch.

torch's own error for a name such as ``gpu`` lists its internal device types (ipu, xla, ...);
``INVASIVE_DEVICE`` and ``--device`` check the name first, so a typo gets the choices.
"""

from __future__ import annotations

import re

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (e.g. cuda:1)"


def known_device(text: str) -> str | None:
    """``text`` normalised (``CUDA:1`` -> ``cuda:1``) if it names a device
    ``model.inference.resolve_device`` handles, else None."""
    name = text.strip().lower()
    return name if re.fullmatch(r"auto|cpu|cuda(:\d+)?", name) else None
