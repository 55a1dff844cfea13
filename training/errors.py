"""Errors a user of the training CLI can cause; the CLI prints their message, never a traceback."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A problem with the inputs or options of a training command, explained in its message."""


class DataError(TrainingError):
    """The dataset has problems (missing files, bad labels, unreadable images, ...)."""


def list_offenders(title: str, items: list[str], limit: int = 5) -> str:
    """``title (N): a, b, c, ... and N-3 more`` — the first offenders, never a wall of text."""
    shown = ", ".join(items[:limit])
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"
