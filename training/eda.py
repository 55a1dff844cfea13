"""``eda``: what a dataset holds before training on it — class balance and image sizes."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from training.data import load_labelled_data
from training.plots import plot_class_balance


def explore(data_dir: Path, out_dir: Path, *, skip_bad: bool = False,
            positive_class: str | None = None) -> dict[str, Any]:
    """Writes ``class_balance.png`` and ``eda.json``; returns the summary."""
    data = load_labelled_data(data_dir, skip_bad=skip_bad, positive_class=positive_class)
    counts = Counter(data.class_names[s.label] for s in data.samples)
    counts_in_order = {name: counts.get(name, 0) for name in data.class_names}
    widths, heights, formats, unreadable = [], [], Counter(), []
    for s in data.samples:
        try:
            with Image.open(s.path) as img:  # reads the header only, not the pixels
                widths.append(img.width)
                heights.append(img.height)
                formats[img.format or "?"] += 1
        except (UnidentifiedImageError, OSError):
            unreadable.append(s.name)
    sizes = Counter(zip(widths, heights, strict=True))
    summary = {
        "data": str(data_dir), "layout": data.layout, "images": len(data.samples),
        "classes": counts_in_order, "positive_class": data.positive_class,
        "positive_share": counts_in_order[data.positive_class] / max(1, len(data.samples)),
        "width": _spread(widths), "height": _spread(heights),
        "most_common_sizes": [f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(5)],
        "formats": dict(formats), "unreadable_headers": unreadable, "skipped": data.skipped,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_class_balance(counts_in_order, out_dir / "class_balance.png")
    (out_dir / "eda.json").write_text(json.dumps(summary, indent=2))
    return summary


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
