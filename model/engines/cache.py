"""Converted models on disk, so a restart reuses a conversion instead of repeating it.

One folder per checkpoint (its model id: architecture and a hash of the file) and engine, named
by a digest of what a conversion depends on (the libraries' versions and this cache's format):
``<root>/<model_id>/<engine>-<digest>/``, with a ``meta.json`` that says the same in words. A
new checkpoint, torch or OpenVINO version gets a new folder; nothing is ever read stale.

An entry is written into a temporary folder beside its final name and renamed into place, so a
reader sees a whole entry or none. A cache that cannot be created or written (a read-only root
filesystem in a container) is never an error: the conversion is kept in memory, and one log
line says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from model.checkpoint import _current_umask

logger = logging.getLogger("model.engines")

CACHE_FORMAT = 1  # bump when what a builder writes changes shape
T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/invasive-species/engines``, or ``~/.cache/invasive-species/engines``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "invasive-species" / "engines"


class EngineCache:
    """The cached conversions of one checkpoint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def open(cls, root: Path, model_id: str) -> EngineCache | None:
        """The cache of ``model_id`` under ``root``; None (logged) when it cannot be created."""
        if not model_id:
            return None  # a model that is not a checkpoint file has nothing to key it by
        folder = Path(root) / model_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning(
                "engine cache %s cannot be created (%s); converting in memory at every start",
                root,
                exc.strerror or exc,
            )
            return None
        return cls(folder)

    def entry(self, engine: str, versions: dict[str, str]) -> Path:
        key = json.dumps({"format": CACHE_FORMAT, "engine": engine, **versions}, sort_keys=True)
        return self.folder / f"{engine}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def lookup(self, engine: str, versions: dict[str, str]) -> Path | None:
        path = self.entry(engine, versions)
        return path if (path / "meta.json").is_file() else None

    def store(
        self, engine: str, versions: dict[str, str], write: Callable[[Path], None]
    ) -> Path | None:
        """Run ``write(folder)`` into a temporary folder, then rename it into place.

        Returns the entry, or None (logged) when it could not be written.
        """
        final = self.entry(engine, versions)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.folder))
        except OSError as exc:
            logger.warning(
                "engine cache %s is not writable (%s); the %s conversion is kept in memory only",
                self.folder,
                exc.strerror or exc,
                engine,
            )
            return None
        try:
            os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp's 0700 would hide it from others
            write(tmp)
            meta = {"format": CACHE_FORMAT, "engine": engine, "versions": versions,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            _fsync_files(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process wrote it first
        except Exception as exc:  # a full disk must not stop the service
            shutil.rmtree(tmp, ignore_errors=True)
            logger.warning("could not write the engine cache entry %s: %s", final, exc)
            return None
        return final


def load_or_convert(
    cache: EngineCache | None,
    engine: str,
    versions: dict[str, str],
    convert: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> tuple[T, bool]:
    """(artifact, whether it came from the cache): read the cached one, else convert and store."""
    entry = cache.lookup(engine, versions) if cache else None
    if entry is not None:
        try:
            return load(entry), True
        except Exception as exc:
            logger.warning("unreadable engine cache entry %s (%s); converting again", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
    artifact = convert()
    if cache is not None:
        cache.store(engine, versions, lambda folder: save(artifact, folder))
    return artifact, False


def _fsync_files(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())

