"""Sub-commands that use a trained checkpoint or only look at data: evaluate, predict, eda."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_offline_commands(sub, add_data_flags: Callable, add_runtime_flags: Callable) -> None:
    """Register ``evaluate``, ``predict`` and ``eda`` on the ``invasive-train`` parser."""
    del sub, add_data_flags, add_runtime_flags  # filled in with the evaluate/predict/eda modules


def _unused(args: argparse.Namespace) -> int:  # pragma: no cover
    return 0
