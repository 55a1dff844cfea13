"""Checks of the paths a command was given, made before it imports torch (seconds).

A mistyped ``--checkpoint`` or ``--data`` is the commonest first-run error; it is reported at
once. The checkpoint check reads only the safetensors header (8 bytes of length, then JSON); the
full validation is still ``model.checkpoint``'s when the command loads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.errors import DataError, TrainingError

# = model.checkpoint.METADATA_KEY (that module imports torch); a test keeps the two equal.
METADATA_KEY = "invasive_species_metadata"
MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
NAME_MAX = 255  # bytes in one file name: ext4, xfs, btrfs, tmpfs, overlayfs alike


def check_data_dir(path: Path, flag: str = "--data", what: str = "data directory") -> None:
    if not path.exists():
        raise DataError(f"{what} not found: {path} ({flag})")
    if not path.is_dir():
        raise DataError(f"{flag} {path} is a file; it must be a folder of photos")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"{flag} {path}: permission denied (cannot list the folder)")


def check_file(path: Path, flag: str) -> None:
    if not path.exists():
        raise TrainingError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise TrainingError(f"{flag} {path} is a folder; it must be a file")
    if not os.access(path, os.R_OK):
        raise TrainingError(f"{flag} {path}: permission denied (cannot read the file)")


def check_output(path: Path, *, folder: bool = False, flag: str = "--output") -> None:
    """``path`` can be written: a file path that is no folder, or (``folder``: ``fit --folds``)
    a folder path that is no file, in a place this user may create files. Checked before any
    work: a run that trained for hours must not fail at its first write."""
    check_name_lengths(path, flag)
    if folder:
        if path.exists() and not path.is_dir():
            raise TrainingError(f"{flag} {path} is a file; it must be a folder")
    elif path.is_dir():
        raise TrainingError(
            f"{flag} {path} is a folder; it must be the file to write, e.g. "
            f"{path / 'model.safetensors'} (remove the folder if an earlier run left it empty)")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TrainingError(f"{flag} {path}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        why = "read-only file system" if read_only else "permission denied"
        raise TrainingError(f"{flag} {path}: {why} (cannot create files in {existing})")


def check_name_lengths(path: Path, flag: str = "--output") -> None:
    """No part of ``path`` is longer than a file name may be (255 bytes on Linux's file
    systems): else the first look at it (``is_dir``) or the write fails with "File name too
    long" and a traceback."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise TrainingError(f"{flag} {path}: the name {part[:30]}... is too long ({size} "
                                f"bytes; file names hold at most {NAME_MAX})")


def check_fit_output(output: Path, folds: int, log: Path | None) -> None:
    """``fit``'s ``--output`` (a checkpoint file; with ``--folds``: a folder) and ``--log``."""
    if folds > 1:
        if output.suffix == ".safetensors":  # the README's single-model --output, plus --folds
            raise TrainingError(
                f"--output {output}: --folds writes a folder (fold1.safetensors ... and cv.json "
                f"inside it); pass a folder path, e.g. --output {output.parent / 'cv'}")
        if output.exists() and not output.is_dir():
            raise TrainingError(f"--output {output} is a file; with --folds it must be a folder")
    check_output(output, folder=folds > 1)
    if log is not None:
        check_output(log, flag="--log")


def check_checkpoint(path: Path) -> None:
    """A readable safetensors file whose header carries this project's metadata."""
    if not path.exists():
        raise TrainingError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise TrainingError(f"--checkpoint {path} is a folder; it must be a .safetensors file")
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= length <= min(MAX_HEADER, size - 8):
                raise ValueError("no safetensors header")
            header = json.loads(f.read(length))
    except PermissionError:
        raise TrainingError(f"cannot read the checkpoint {path}: permission denied") from None
    except OSError as exc:
        raise TrainingError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TrainingError(
            f"{path} is not a readable checkpoint (corrupt or truncated safetensors file: {exc})"
        ) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise TrainingError(
            f"{path} is a safetensors file but not a checkpoint of this project (no "
            f"{METADATA_KEY!r} metadata); pass a checkpoint written by invasive-train fit"
        )
