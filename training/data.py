"""Find the labelled photos of a dataset: Kaggle layout or one folder per class.

Kaggle layout: ``DIR/train_labels.csv`` (columns ``name,invasive``), photos in ``DIR/train/``.
The CSV may carry a BOM, CRLF line ends, spaces around fields, and names with or without ``.jpg``.
Class folders: ``DIR/<class name>/*.jpg``; class names come from the folders (any number >= 2).
The invasive (positive) class is ``--positive-class``, else a folder called ``invasive``, ``1`` or
``positive``; with neither, the data is a multi-class problem (``positive_class`` None).

Every problem found (missing files, duplicate names, labels outside {0, 1}, ...) is collected and
reported in one :class:`DataError` listing the first offenders, unless ``skip_bad`` is set, in
which case the bad rows are dropped and listed in ``LabelledData.skipped``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from training.archives import extract_kaggle_archives
from training.errors import DataError, list_offenders

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff")
LABELS_FILE = "train_labels.csv"
KAGGLE_CLASS_NAMES = ["not_invasive", "invasive"]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into LabelledData.class_names
    name: str  # the file's stem: the key used by label and group CSVs


@dataclass
class LabelledData:
    root: Path
    layout: str  # "kaggle" or "folders"
    class_names: list[str]
    positive_class: str | None  # None: multi-class (class folders with no invasive class)
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)  # "name: why" for rows dropped by skip_bad

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def multiclass(self) -> bool:
        return self.positive_class is None

    @property
    def positive_index(self) -> int:
        if self.positive_class is None:
            raise ValueError("multi-class data has no positive class")
        return self.class_names.index(self.positive_class)

    def fingerprint(self) -> str:
        """sha256 of the sorted (relative path, label, byte size) triples: names the exact data."""
        digest = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: str(s.path)):
            rel = s.path.relative_to(self.root).as_posix()
            digest.update(f"{rel}\t{self.class_names[s.label]}\t{s.path.stat().st_size}\n".encode())
        return digest.hexdigest()

    def without(self, bad_names: dict[str, str]) -> LabelledData:
        """A copy without the samples in ``bad_names`` (name -> reason), listed as skipped."""
        kept = [s for s in self.samples if s.name not in bad_names]
        skipped = self.skipped + [f"{n}: {why}" for n, why in bad_names.items()]
        return LabelledData(
            self.root, self.layout, self.class_names, self.positive_class, kept, skipped
        )


def image_stem(name: str) -> str:
    """``"12.jpg"`` -> ``"12"``; ``"12"`` -> ``"12"``: labels CSVs name images either way."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV as dicts, tolerant of a BOM, CRLF and spaces around headers and values."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 CSV file ({exc})") from None
    reader = csv.reader(text.splitlines())
    rows = [[cell.strip() for cell in row] for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    return [dict(zip(header, row, strict=False)) for row in body]


def load_labelled_data(
    root: str | Path, *, skip_bad: bool = False, positive_class: str | None = None
) -> LabelledData:
    """Index the dataset at ``root`` (either layout), validating every row."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    extract_kaggle_archives(root)
    if (root / LABELS_FILE).is_file():
        data = _load_kaggle(root, skip_bad)
    else:
        data = _load_class_folders(root, positive_class, skip_bad)
    if positive_class is not None:  # class folders took it as given: check it here too
        if positive_class not in data.class_names:
            raise DataError(f"--positive-class {positive_class!r} is not one of {data.class_names}")
        data.positive_class = positive_class
    present = {s.label for s in data.samples}
    if len(present) < 2:
        raise DataError(
            f"{root}: training needs at least two classes with images, found only "
            f"{[data.class_names[i] for i in sorted(present)]}"
        )
    return data


def _load_kaggle(root: Path, skip_bad: bool) -> LabelledData:
    labels_csv = root / LABELS_FILE
    image_dir = root / "train"
    if not image_dir.is_dir():
        raise DataError(f"{labels_csv} found but the image folder {image_dir} is missing")
    rows = read_table(labels_csv)
    if not rows or "name" not in rows[0] or "invasive" not in rows[0]:
        raise DataError(f"{labels_csv} must have the columns 'name,invasive'")
    files = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    by_stem = {p.stem: p for p in files.values()}

    problems: dict[str, list[str]] = {"missing files": [], "duplicate names": [], "bad labels": []}
    samples: list[Sample] = []
    seen: set[str] = set()
    for line_no, row in enumerate(rows, start=2):
        name, raw_label = row.get("name", ""), row.get("invasive", "")
        path = files.get(name) or by_stem.get(image_stem(name))
        stem = path.stem if path else image_stem(name)
        if stem in seen:
            problems["duplicate names"].append(f"{name!r} (line {line_no})")
            continue
        seen.add(stem)
        if raw_label not in ("0", "1"):
            problems["bad labels"].append(f"{name!r}={raw_label!r} (line {line_no})")
            continue
        if path is None:
            problems["missing files"].append(f"{name!r} (line {line_no})")
            continue
        samples.append(Sample(path=path, label=int(raw_label), name=stem))

    found = {k: v for k, v in problems.items() if v}
    skipped: list[str] = []
    if found:
        if not skip_bad:
            raise DataError(_problem_report(labels_csv, found))
        skipped = [f"{item}: {kind}" for kind, items in found.items() for item in items]
    return LabelledData(root, "kaggle", list(KAGGLE_CLASS_NAMES), "invasive", samples, skipped)


def _load_class_folders(root: Path, positive_class: str | None, skip_bad: bool) -> LabelledData:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = [d.name for d in class_dirs]
    if len(class_names) < 2:
        raise DataError(
            f"{root} is neither Kaggle layout ({LABELS_FILE} + train/) nor class folders "
            f"(one sub-folder per class, at least two); found folders: {class_names}"
        )
    samples = [
        Sample(path=p, label=i, name=p.stem)
        for i, d in enumerate(class_dirs)
        for p in sorted(d.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    counts: dict[str, list[str]] = {}
    for s in samples:
        counts.setdefault(s.name, []).append(s.path.relative_to(root).as_posix())
    duplicates = [" & ".join(paths) for paths in counts.values() if len(paths) > 1]
    skipped: list[str] = []
    if duplicates:  # names key the group CSV, so they must be unique across classes
        if not skip_bad:
            raise DataError(_problem_report(root, {"duplicate names": duplicates}))
        # Keep the first file of each name (class folders in sorted order), drop the others.
        kept: dict[str, Sample] = {}
        for s in samples:
            if s.name in kept:
                first = kept[s.name].path.relative_to(root).as_posix()
                skipped.append(f"{s.path.relative_to(root).as_posix()}: duplicate name "
                               f"(kept {first})")
            else:
                kept[s.name] = s
        samples = list(kept.values())
    # No --positive-class and no folder recognisable as the invasive one: multi-class (None).
    positive = positive_class or _guess_positive(class_names)
    return LabelledData(root, "folders", class_names, positive, samples, skipped)


def _guess_positive(class_names: list[str]) -> str | None:
    for candidate in ("invasive", "1", "positive"):
        if candidate in class_names:
            return candidate
    return None


def _problem_report(where: Path, problems: dict[str, list[str]]) -> str:
    lines = [f"{where}: the dataset has problems (pass --skip-bad to drop these rows and go on)"]
    lines += ["  " + list_offenders(kind, items) for kind, items in problems.items()]
    return "\n".join(lines)


def load_groups(data: LabelledData, column: str, group_file: str | Path | None) -> list[str]:
    """The group of every sample, from ``column`` of ``group_file`` (default: the labels CSV)."""
    if group_file is None:
        if data.layout != "kaggle":
            raise DataError("--group-column with class folders needs --group-file (a CSV)")
        group_file = data.root / LABELS_FILE
    group_file = Path(group_file)
    if not group_file.is_file():
        raise DataError(f"group file not found: {group_file}")
    rows = read_table(group_file)
    if not rows or "name" not in rows[0] or column not in rows[0]:
        columns = list(rows[0]) if rows else []
        raise DataError(f"{group_file} needs columns 'name' and {column!r}; it has {columns}")
    group_of = {image_stem(r["name"]): r[column] for r in rows}
    missing = [s.name for s in data.samples if not group_of.get(s.name)]
    if missing:
        raise DataError(list_offenders(f"{group_file}: no {column!r} for images", missing))
    return [group_of[s.name] for s in data.samples]
