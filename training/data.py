"""Find the labelled photos of a dataset: Kaggle layout or one folder per class.

Kaggle layout: ``DIR/train_labels.csv`` (columns ``name,invasive``), photos in ``DIR/train/``.
The CSV may carry a BOM, CRLF line ends, spaces around fields, and names with or without ``.jpg``.
Class folders: ``DIR/<class name>/*.jpg``; class names come from the folders (any number >= 2).
The invasive (positive) class is ``--positive-class``, else a folder called ``invasive``, ``1`` or
``positive``; with neither, the data is a multi-class problem (``positive_class`` None).

Every problem found (missing files, duplicate names, labels outside {0, 1}, files that are not
images, ...) is collected and reported in one :class:`DataError` listing the first offenders,
unless ``skip_bad`` is set, in which case the bad rows are dropped and listed in
``LabelledData.skipped``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from training.archives import extract_kaggle_archives
from training.errors import DataError, list_offenders

# The names of the formats the service decodes (model.imaging.SUPPORTED_FORMATS: JPEG, MPO,
# PNG, WebP, HEIC/HEIF, AVIF, BMP, TIFF, GIF); a test keeps the two in step. A photo named
# otherwise is not looked for (the service sniffs the bytes, but a folder also holds CSVs and
# notes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".webp", ".heic", ".heif",
                  ".avif", ".bmp", ".tif", ".tiff", ".gif")
EMPTY_FILE = "the file is empty"  # the service's empty_file, in words for a file on disk
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
    # Photos in the folder that are not used, said in the start-up summary (not errors: a
    # Kaggle train/ may hold photos on purpose left out of the labels).
    notes: list[str] = field(default_factory=list)

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
            self.root, self.layout, self.class_names, self.positive_class, kept, skipped,
            self.notes,
        )


def decode_failure(path: Path, message: str) -> str:
    """Why ``path`` did not decode: the decode's ``message``, except for a zero-byte file, which
    no format opens and which the service reports as empty (``empty_file``), not as a file in an
    unsupported format."""
    try:
        return EMPTY_FILE if path.stat().st_size == 0 else message
    except OSError:
        return message


def without_indices(items: list[str] | None, drop: Collection[int]) -> list[str] | None:
    """``items`` less the positions in ``drop`` (e.g. the groups of images the decode dropped)."""
    if items is None:
        return None
    return [item for i, item in enumerate(items) if i not in drop]


def image_stem(name: str) -> str:
    """``"12.jpg"`` -> ``"12"``; ``"12"`` -> ``"12"``: labels CSVs name images either way."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV as dicts, tolerant of a BOM, CRLF and spaces around headers and values."""
    return read_table_and_header(path)[1]


def read_table_and_header(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """:func:`read_table`, and the header (a file may hold a header and no rows)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 CSV file ({exc})") from None
    reader = csv.reader(text.splitlines())
    rows = [[cell.strip() for cell in row] for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    return header, [dict(zip(header, row, strict=False)) for row in body]


def missing_columns(path: Path, header: list[str], needed: list[str]) -> str | None:
    """Why ``header`` lacks a column of ``needed``, with a hint for the usual causes; None when
    it has them all."""
    if all(c in header for c in needed):
        return None
    hint = ""
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        hint = " (its fields are not separated by commas: save it as a comma-separated CSV)"
    elif all(c.lower() in {h.lower() for h in header} for c in needed):
        hint = " (column names are case-sensitive)"
    wanted = " and ".join(repr(c) for c in needed)
    return f"{path} needs columns {wanted}; its header has {header}{hint}"


def load_labelled_data(
    root: str | Path, *, skip_bad: bool = False, positive_class: str | None = None,
    min_classes: int = 2,
) -> LabelledData:
    """Index the dataset at ``root`` (either layout), validating every row.

    ``min_classes``: 2 to train; 1 to evaluate or look at a set that holds one class only (a
    folder of confirmed sightings: recall and accuracy are defined, ROC AUC is not)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    extract_kaggle_archives(root)
    if (root / LABELS_FILE).is_file():
        data, problems = _load_kaggle(root)
        where = root / LABELS_FILE
    else:
        data, problems = _load_class_folders(root, positive_class, min_classes)
        where = root
    # A file that is no image at all would otherwise surface only in the decode, after this
    # report had sent the user off to fix the rest, or after "--skip-bad: N skipped" had been
    # printed with N too small. Its header tells (no pixels are decoded: about a millisecond a
    # file), so it is read when there is a report to complete or rows to skip; clean data is
    # not slowed down (the decode reports what it finds there in one message too).
    if problems or skip_bad:
        unreadable = unreadable_headers(data.samples)
        if unreadable:
            problems["unreadable images"] = [f"{n} ({why})" for n, why in unreadable.items()]
            data = data.without(unreadable)
    if problems and not skip_bad:
        report = _problem_report(where, problems)
        if "missing files" in problems and (root / "train.7z").is_file():  # a cut-off unpack
            report += (f"\n  (if {root / 'train'} was unpacked from train.7z by an older, "
                       "interrupted run, delete it to unpack the archive again)")
        raise DataError(report)
    if positive_class is not None:  # class folders took it as given: check it here too
        if positive_class not in data.class_names:
            raise DataError(f"--positive-class {positive_class!r} is not one of {data.class_names}")
        data.positive_class = positive_class
    present = {s.label for s in data.samples}
    if len(present) < min_classes:
        raise DataError(
            f"{root}: training needs at least two classes with images, found only "
            f"{[data.class_names[i] for i in sorted(present)]}"
        )
    return data


def unreadable_headers(samples: list[Sample], threads: int = 8) -> dict[str, str]:
    """name -> why, for the samples whose file no supported image format opens. Only headers
    are read: a photo whose data is cut short still passes, and the decode finds it."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(lambda s: (s.name, _header_problem(s.path)), samples))
    return {name: why for name, why in found if why is not None}


def _header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image the decode accepts, or None; the decode's own words
    (``model.imaging``), so a photo skipped here reads as one skipped there."""
    from PIL import Image, UnidentifiedImageError

    from model.imaging import SUPPORTED_FORMATS, open_formats, unsupported_format_error

    try:
        stream = path.open("rb")
    except OSError as exc:
        return f"cannot read the file ({exc})"
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:  # else: "not an image in a supported format"
            return EMPTY_FILE
        try:
            # Pillow's EXIF/ICC warnings are silenced by model.imaging's filter (a
            # catch_warnings() here would race between the pool's threads)
            with Image.open(stream, formats=list(open_formats())) as img:
                kind = img.format
        except UnidentifiedImageError:
            stream.seek(0)
            return unsupported_format_error(stream.read(16)).message
        except (OSError, SyntaxError, ValueError) as exc:  # recognised, header cut short
            return f"the image could not be decoded ({exc})"
    return None if kind in SUPPORTED_FORMATS else f"image format {kind} is not supported"


def _load_kaggle(root: Path) -> tuple[LabelledData, dict[str, list[str]]]:
    """The rows that are fine, and the problems of the others by kind (as ``skipped`` too)."""
    labels_csv = root / LABELS_FILE
    image_dir = root / "train"
    if not image_dir.is_dir():
        raise DataError(f"{labels_csv} found but the image folder {image_dir} is missing")
    header, rows = read_table_and_header(labels_csv)
    problem = missing_columns(labels_csv, header, ["name", "invasive"])
    if problem:
        raise DataError(problem)
    if not rows:
        raise DataError(f"{labels_csv} has a header and no rows: no photo is labelled")
    # Hidden files are no photos: macOS's "._1.jpg" AppleDouble files, for one.
    files = {p.name: p for p in image_dir.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
    by_stem = {p.stem: p for p in files.values()}

    problems: dict[str, list[str]] = {"missing files": [], "duplicate names": [], "bad labels": []}
    samples: list[Sample] = []
    seen: set[str] = set()
    listed: set[Path | None] = set()  # every photo a row names, well labelled or not
    for line_no, row in enumerate(rows, start=2):
        name, raw_label = row.get("name", ""), row.get("invasive", "")
        path = files.get(name) or by_stem.get(image_stem(name)) or _named_file(image_dir, name)
        listed.add(path)
        stem = image_stem(path.name if path else name)
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
    skipped = [f"{item}: {kind}" for kind, items in found.items() for item in items]
    unlabelled = sorted(p.name for p in files.values() if p not in listed)
    notes = [list_offenders(f"photos in {image_dir} with no row in {LABELS_FILE}, left out",
                            unlabelled)] if unlabelled else []
    data = LabelledData(root, "kaggle", list(KAGGLE_CLASS_NAMES), "invasive", samples, skipped,
                        notes)
    return data, found


def _load_class_folders(root: Path, positive_class: str | None, min_classes: int = 2
                        ) -> tuple[LabelledData, dict[str, list[str]]]:
    """The photos (of photos sharing a name, the first), and the problems by kind."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = [d.name for d in class_dirs]
    if len(class_names) < min_classes or not class_names:
        raise DataError(
            f"{root} is neither Kaggle layout ({LABELS_FILE} + train/) nor class folders "
            f"(one sub-folder per class, at least {'two' if min_classes > 1 else 'one'}); "
            f"found folders: {class_names}"
        )
    photos = {d: [p for p in sorted(d.iterdir()) if _is_photo(p)] for d in class_dirs}
    problems: dict[str, list[str]] = {}
    skipped: list[str] = []
    nested = {f"{d.name}/{sub.name}": sum(1 for p in sub.rglob("*") if _is_photo(p))
              for d in class_dirs for sub in sorted(d.iterdir())
              if sub.is_dir() and not sub.name.startswith(".")}
    nested = {k: n for k, n in nested.items() if n}
    # A class folder with no photos would add a class the model can never learn (an output
    # trained only towards 0): an eda or runs/ folder saved inside the data, or photos kept in
    # sub-folders, which are not read.
    empty = [d for d in class_dirs if not photos[d]]
    if empty:
        problems["class folders with no photos"] = [
            f"{d.name}/" + (" (its photos are in sub-folders, which are not read)"
                            if any(k.startswith(f"{d.name}/") for k in nested) else "")
            for d in empty]
        skipped += [f"{d.name}/: class folder with no photos" for d in empty]
        class_dirs = [d for d in class_dirs if photos[d]]
        class_names = [d.name for d in class_dirs]
    samples = [
        Sample(path=p, label=i, name=p.stem)
        for i, d in enumerate(class_dirs)
        for p in photos[d]
    ]
    notes = []
    if nested:
        notes.append(list_offenders("photos in sub-folders of class folders, not read (fit "
                                    "reads CLASS/*.jpg)",
                                    [f"{k}/ ({n})" for k, n in nested.items()]))
    others = [f"{d.name}/{p.name}" for d in class_dirs for p in sorted(d.iterdir())
              if p.is_file() and not p.name.startswith(".") and not _is_photo(p)]
    if others:  # a camera's extensionless export, a .txt: said, since fit learns without them
        notes.append(list_offenders("files in class folders without a photo's name (.jpg, "
                                    ".png, ...; see the README), not read", others))
    loose = [p.name for p in sorted(root.iterdir()) if _is_photo(p)]
    if loose:
        notes.append(list_offenders(f"photos in {root} itself, in no class folder, not read",
                                    loose))
    counts: dict[str, list[str]] = {}
    for s in samples:
        counts.setdefault(s.name, []).append(s.path.relative_to(root).as_posix())
    duplicates = [" & ".join(paths) for paths in counts.values() if len(paths) > 1]
    if duplicates:  # names key the group CSV, so they must be unique across classes
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
    data = LabelledData(root, "folders", class_names, positive, samples, skipped, notes)
    if duplicates:
        problems["duplicate names"] = duplicates
    return data, problems


def _named_file(image_dir: Path, name: str) -> Path | None:
    """The file a row names exactly though its name is no image name (``cam``, a camera's
    extensionless export): the row says it is a photo, and the decode checks that it is."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = image_dir / name
    return path if path.is_file() else None


def _is_photo(path: Path) -> bool:
    """A file with an image suffix, not hidden (macOS's "._x.jpg" AppleDouble files are not
    photos; ``predict`` leaves hidden files out too)."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
            and path.is_file())


def _guess_positive(class_names: list[str]) -> str | None:
    for candidate in ("invasive", "1", "positive"):
        if candidate in class_names:
            return candidate
    return None


def _problem_report(where: Path, problems: dict[str, list[str]]) -> str:
    lines = [f"{where}: the dataset has problems (pass --skip-bad to drop these rows and go on)"]
    lines += ["  " + list_offenders(kind, items)
              + (" (a label must be 0 or 1)" if kind == "bad labels" else "")
              for kind, items in problems.items()]
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
    header, rows = read_table_and_header(group_file)
    problem = missing_columns(group_file, header, ["name", column])
    if problem:
        raise DataError(problem)
    group_of = {image_stem(r["name"]): r[column] for r in rows}
    missing = [s.name for s in data.samples if not group_of.get(s.name)]
    if missing:
        raise DataError(list_offenders(f"{group_file}: no {column!r} for images", missing))
    return [group_of[s.name] for s in data.samples]
