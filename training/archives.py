"""Accept the Kaggle download folder as it comes: archives are extracted on first use.

Kaggle ships "Invasive Species Monitoring" as ``invasive-species-monitoring.zip`` holding
``train.7z``, ``train_labels.csv.zip``, ``test.7z`` and ``sample_submission.csv.zip``. Any of
those found in the data folder are unpacked in place once; later runs find the extracted files
and touch nothing.
"""

from __future__ import annotations

import zipfile
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


def _unzip(archive: Path, dest: Path) -> Path:
    print(f"extracting {archive} ...", flush=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # zipfile drops absolute paths and ".." components
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return archive


def _un7z(archive: Path, dest: Path) -> Path:
    import py7zr  # imported here: only the Kaggle download needs it

    print(f"extracting {archive} (a few minutes for the Kaggle train set) ...", flush=True)
    try:
        with py7zr.SevenZipFile(archive, mode="r") as zf:
            names = zf.getnames()
            unsafe = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
            if unsafe:
                raise DataError(f"{archive} has unsafe paths, refusing to extract: {unsafe[:3]}")
            zf.extractall(path=dest)
    except (py7zr.exceptions.ArchiveError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return archive
