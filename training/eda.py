"""``eda``: what a dataset holds before training on it.

Class balance, image sizes and formats, a grid of sample photos per class, and with
``--group-column`` the groups (e.g. the field photo each tile was cut from): how many per class,
how many images each, and how many hold more than one class. Writes ``eda.json``,
``class_balance.png`` and ``samples.png`` into the output folder.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from model.pixel_limit import configured_max_pixels
from training.data import LABELS_FILE, LabelledData, load_groups, load_labelled_data
from training.errors import list_offenders
from training.plots import plot_class_balance
from training.sheets import class_grid

SAMPLES_PER_CLASS = 8


def explore(data_dir: Path, out_dir: Path, *, skip_bad: bool = False,
            positive_class: str | None = None, group_column: str | None = None,
            group_file: Path | None = None, samples_per_class: int = SAMPLES_PER_CLASS,
            seed: int = 0) -> dict[str, Any]:
    """Writes ``class_balance.png``, ``samples.png`` and ``eda.json``; returns the summary."""
    # One class is worth a look too (a folder of confirmed sightings, before evaluate).
    data = load_labelled_data(data_dir, skip_bad=skip_bad, positive_class=positive_class,
                              min_classes=1)
    groups = load_groups(data, group_column, group_file) if group_column else None
    counts = Counter(data.class_names[s.label] for s in data.samples)
    counts_in_order = {name: counts.get(name, 0) for name in data.class_names}
    widths, heights, formats, unreadable, too_large = [], [], Counter(), [], []
    limit = configured_max_pixels()
    for s in data.samples:
        try:
            with Image.open(s.path) as img:  # reads the header only, not the pixels
                widths.append(img.width)
                heights.append(img.height)
                formats[img.format or "?"] += 1
                if img.width * img.height > limit:  # fit would stop at its decode
                    too_large.append(f"{s.name} ({img.width}x{img.height})")
        except (UnidentifiedImageError, OSError):
            unreadable.append(s.name)
    sizes = Counter(zip(widths, heights, strict=True))
    summary = {
        "data": str(data_dir), "layout": data.layout, "images": len(data.samples),
        "classes": counts_in_order, "positive_class": data.positive_class,
        "positive_share": None if data.multiclass  # multi-class: no invasive class
        else counts_in_order[data.positive_class] / max(1, len(data.samples)),
        "width": _spread(widths), "height": _spread(heights),
        "most_common_sizes": [f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(5)],
        "formats": dict(formats), "unreadable_headers": unreadable,
        "over_pixel_limit": too_large, "pixel_limit": limit, "skipped": data.skipped,
        "left_out": data.notes,
    }
    if groups is not None:
        source = group_file or data.root / LABELS_FILE
        summary["groups"] = {"column": group_column, "file": str(source),
                             **group_stats(data, groups)}
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"class_balance": plot_class_balance(counts_in_order, out_dir / "class_balance.png")}
    picked = sample_photos(data, samples_per_class, seed)
    plots["samples"] = class_grid(
        {f"{name} ({counts_in_order[name]})": paths for name, paths in picked.items()},
        out_dir / "samples.png",
        title=f"{data_dir}: up to {samples_per_class} random photos per class (seed {seed})")
    summary["plots"] = {k: str(v) for k, v in plots.items()}
    summary["summary_file"] = str(out_dir / "eda.json")
    (out_dir / "eda.json").write_text(json.dumps(summary, indent=2))
    return summary


def sample_photos(data: LabelledData, per_class: int, seed: int) -> dict[str, list[Path]]:
    """Up to ``per_class`` photos of each class, drawn at random (reproducibly)."""
    rng = random.Random(seed)
    by_class: dict[str, list[Path]] = {name: [] for name in data.class_names}
    for s in data.samples:
        by_class[data.class_names[s.label]].append(s.path)
    return {name: rng.sample(paths, min(per_class, len(paths))) for name, paths in
            by_class.items()}


def group_stats(data: LabelledData, groups: list[str]) -> dict[str, Any]:
    """How the images fall into groups: per class, per group, and groups mixing classes."""
    by_group: dict[str, Counter] = {}
    for sample, group in zip(data.samples, groups, strict=True):
        by_group.setdefault(group, Counter())[data.class_names[sample.label]] += 1
    sizes = sorted(((sum(c.values()), g) for g, c in by_group.items()), reverse=True)
    mixed = sorted(g for g, c in by_group.items() if len(c) > 1)
    return {
        "groups": len(by_group),
        "groups_per_class": {name: sum(1 for c in by_group.values() if c[name])
                             for name in data.class_names},
        "images_per_group": _spread([n for n, _ in sizes]),
        "groups_with_several_classes": len(mixed),
        "mixed_examples": mixed[:5],
        "largest_groups": [f"{g}: {n}" for n, g in sizes[:5]],
    }


def eda_lines(summary: dict[str, Any]) -> list[str]:
    """The readable summary ``invasive-train eda`` prints."""
    classes = ", ".join(f"{k} {v}" for k, v in summary["classes"].items())
    w, h = summary["width"], summary["height"]
    common = ", ".join(summary["most_common_sizes"][:3])
    sizes = (f"width {w['min']}-{w['max']} (median {w['median']:g}), height {h['min']}-"
             f"{h['max']} (median {h['median']:g}); most common {common}" if w and h
             else "no readable headers")
    rows = [
        ("data", f"{summary['data']} ({summary['layout']} layout)"),
        ("images", f"{summary['images']}: {classes}; positive class {summary['positive_class']} "
                   f"({100 * summary['positive_share']:.1f} %)" if summary["positive_class"]
                   else f"{summary['images']}: {classes}; multi-class (no invasive class)"),
        ("sizes", sizes),
        ("formats", ", ".join(f"{k} {v}" for k, v in summary["formats"].items())),
    ]
    if len(summary["classes"]) == 1:
        rows.append(("note", "one class only: evaluate measures a checkpoint's recall on it; "
                             "fit needs at least two classes"))
    if summary["unreadable_headers"]:
        rows.append(("unreadable", f"{len(summary['unreadable_headers'])}: "
                                   f"{', '.join(summary['unreadable_headers'][:5])}"))
    if summary["over_pixel_limit"]:
        rows.append(("too large", list_offenders(
            f"over {summary['pixel_limit']:,} pixels, refused by fit, predict and the service "
            "(decompression-bomb limit)", summary["over_pixel_limit"])))
    if summary["skipped"]:  # --skip-bad: said here, not only in eda.json
        rows.append(("skipped", list_offenders("--skip-bad", summary["skipped"])))
    rows += [("left out", note) for note in summary.get("left_out", [])]
    g = summary.get("groups")
    if g:
        per_class = ", ".join(f"{k} {v}" for k, v in g["groups_per_class"].items())
        n = g["images_per_group"]
        rows += [
            ("groups", f"{g['groups']} by {g['column']!r} ({g['file']}); groups with each "
                       f"class: {per_class}"),
            ("per group", f"images min {n['min']}, median {n['median']:g}, max {n['max']}; "
                          f"largest: {', '.join(g['largest_groups'][:3])}"),
            ("mixed", f"{g['groups_with_several_classes']} groups hold more than one class"
                      + (f" (e.g. {', '.join(g['mixed_examples'][:3])})"
                         if g["mixed_examples"] else "")),
        ]
    rows += [(name.replace("_", " "), path) for name, path in summary["plots"].items()]
    rows.append(("summary file", summary["summary_file"]))
    return [f"  {label:<13} {text}" for label, text in rows]


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
