"""Accept the Kaggle download folder as it comes: archives are extracted on first use.

Kaggle ships "Invasive Species Monitoring" as ``invasive-species-monitoring.zip`` holding
``train.7z``, ``train_labels.csv.zip``, ``test.7z`` and ``sample_submission.csv.zip``. Any of
those found in the data folder are unpacked in place once; later runs find the extracted files
and touch nothing. An archive is unpacked into a hidden temporary folder first and its contents
moved into place when it is complete, so an interrupted run leaves no half-filled ``train/``
that the next run would take for the whole set.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from training.errors import DataError

COMPETITION_ZIP = "invasive-species-monitoring.zip"


def extract_kaggle_archives(root: Path) -> list[Path]:
    """Unpack the Kaggle archives under ``root`` that have not been unpacked yet."""
    extracted: list[Path] = []
    if (root / COMPETITION_ZIP).is_file() and not _any_exists(
        root, "train.7z", "train", "train_labels.csv.zip", "train_labels.csv"
    ):
        extracted.append(_unzip(root / COMPETITION_ZIP, root))
    for name, target in (("train_labels.csv.zip", "train_labels.csv"),
                         ("sample_submission.csv.zip", "sample_submission.csv")):
        if (root / name).is_file() and not (root / target).exists():
            extracted.append(_unzip(root / name, root))
    for name, target in (("train.7z", "train"), ("test.7z", "test")):
        if (root / name).is_file() and not (root / target).exists():
            extracted.append(_un7z(root / name, root))
    return extracted


def _any_exists(root: Path, *names: str) -> bool:
    return any((root / n).exists() for n in names)


def _into_place(dest: Path, extract: Callable[[Path], None]) -> None:
    """``extract`` into a hidden folder in ``dest``, then move each top-level entry it made into
    ``dest`` (a rename: same file system). An entry already in ``dest`` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    try:
        extract(tmp)
        for entry in sorted(tmp.iterdir()):
            if not (dest / entry.name).exists():
                entry.rename(dest / entry.name)
    finally:  # an error or Ctrl-C: nothing half-extracted stays behind
        shutil.rmtree(tmp, ignore_errors=True)


def _unzip(archive: Path, dest: Path) -> Path:
    print(f"extracting {archive} ...", flush=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            # zipfile drops absolute paths and ".." components
            _into_place(dest, lambda tmp: zf.extractall(tmp))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return archive


def _un7z(archive: Path, dest: Path) -> Path:
    import py7zr  # imported here: only the Kaggle download needs it

    slow = " (a few minutes for the Kaggle train set)" if archive.name == "train.7z" else ""
    print(f"extracting {archive}{slow} ...", flush=True)
    try:
        with py7zr.SevenZipFile(archive, mode="r") as zf:
            names = zf.getnames()
            unsafe = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
            if unsafe:
                raise DataError(f"{archive} has unsafe paths, refusing to extract: {unsafe[:3]}")
            _into_place(dest, lambda tmp: zf.extractall(path=tmp))
    except (py7zr.exceptions.ArchiveError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return archive
