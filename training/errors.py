"""Errors a user of the training CLI can cause; the CLI prints their message, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class TrainingError(RuntimeError):
    """A problem with the inputs or options of a training command, explained in its message."""


class DataError(TrainingError):
    """The dataset has problems (missing files, bad labels, unreadable images, ...)."""


def list_offenders(title: str, items: list[str], limit: int = 5) -> str:
    """``title (N): a, b, c, ... and N-3 more`` — the first offenders, never a wall of text."""
    shown = ", ".join(items[:limit])
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"


@contextlib.contextmanager
def writing(path: Path, *, folder: bool = False) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (or, ``folder``, files in it) into one line
    naming the file and the reason: a full disk, a folder that holds no files (/proc), a name
    too long. A file is named as given, not as the temporary file an atomic write failed on."""
    try:
        yield
    except OSError as exc:
        where = (exc.filename or path) if folder else path
        raise TrainingError(f"cannot write {where}: {exc.strerror or exc}") from None
