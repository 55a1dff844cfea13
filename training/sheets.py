"""Contact sheets: grids of photo thumbnails with captions (Pillow), for evaluate and eda.

Photos are decoded through ``model.imaging.decode_image`` (EXIF rotation, HEIC, the pixel limit,
reduced-scale JPEG decoding), so a sheet shows the pictures the way the model sees them before
the resize. An unreadable photo becomes a grey tile that says so instead of failing the sheet.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from model.imaging import ImageDecodeError, decode_image

THUMB = 160  # thumbnail side in pixels
PAD = 6
LINE = 14  # caption line height
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


@dataclass(frozen=True)
class Tile:
    path: Path
    caption: tuple[str, ...]  # one short line each, under the thumbnail
    frame: tuple[int, int, int] | None = None  # border colour, e.g. red for a false positive


def thumbnail(path: Path, side: int = THUMB) -> Image.Image:
    """``path`` shrunk to fit a ``side`` x ``side`` square (aspect kept), or a grey tile."""
    try:
        img = decode_image(path, min_size=side)
        img.thumbnail((side, side))
        return img
    except (ImageDecodeError, OSError):
        tile = Image.new("RGB", (side, side), (190, 190, 190))
        ImageDraw.Draw(tile).text((PAD, side // 2 - LINE), "unreadable", fill=TEXT, font=_font())
        return tile


def contact_sheet(tiles: list[Tile], path: Path, *, title: str, columns: int = 8,
                  side: int = THUMB) -> Path:
    """One PNG: ``title`` on top, then ``tiles`` left to right, top to bottom."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    lines = max((len(t.caption) for t in tiles), default=0)
    cell_w, cell_h = side + 2 * PAD, side + 2 * PAD + lines * LINE
    width = max(columns * cell_w, 8 * len(title) + 2 * PAD)
    sheet = Image.new("RGB", (width, 2 * LINE + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((PAD, PAD // 2), title, fill=TEXT, font=font)
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * cell_w + PAD, 2 * LINE + (i // columns) * cell_h + PAD
        _paste(sheet, draw, tile, x, y, side)
        for k, text in enumerate(tile.caption):
            draw.text((x, y + side + 2 + k * LINE), _fit(text, side), fill=TEXT, font=font)
    return _save(sheet, path)


MISCLASSIFIED_LIMIT = 64  # thumbnails on a misclassified contact sheet (the CSV lists them all)


def write_misclassified(rows: list[dict], columns: list[str], out_dir: Path, *,
                        title: Callable[[int], str], tile: Callable[[dict], Tile]) -> dict:
    """``misclassified.csv`` (every row, ranked worst first) and ``misclassified.png`` (the first
    :data:`MISCLASSIFIED_LIMIT` as a contact sheet; ``title(shown)`` heads it, ``tile(row)`` draws
    a row), for ``evaluate``'s binary and multi-class reports alike."""
    csv_path = out_dir / "misclassified.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["rank", *columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows({"rank": i, **r} for i, r in enumerate(rows, start=1))
    sheet = None
    if rows:
        shown = rows[:MISCLASSIFIED_LIMIT]
        sheet = str(contact_sheet([tile(r) for r in shown], out_dir / "misclassified.png",
                                  title=title(len(shown))))
    return {"count": len(rows), "csv": str(csv_path), "sheet": sheet}


def class_grid(samples: dict[str, list[Path]], path: Path, *, title: str,
               side: int = 128) -> Path:
    """One row of thumbnails per class, the class name (and count shown) at the row's left."""
    label_w = 150
    columns = max((len(v) for v in samples.values()), default=1) or 1
    cell = side + 2 * PAD
    sheet = Image.new("RGB", (label_w + columns * cell, 2 * LINE + len(samples) * cell),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((PAD, PAD // 2), title, fill=TEXT, font=font)
    for r, (name, paths) in enumerate(samples.items()):
        y = 2 * LINE + r * cell + PAD
        draw.text((PAD, y + side // 2 - LINE), _fit(name, label_w - 2 * PAD), fill=TEXT,
                  font=font)
        for c, photo in enumerate(paths):
            _paste(sheet, draw, Tile(photo, (), None), label_w + c * cell + PAD, y, side)
    return _save(sheet, path)


def _paste(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, x: int, y: int,
           side: int) -> None:
    thumb = thumbnail(tile.path, side)
    ox, oy = x + (side - thumb.width) // 2, y + (side - thumb.height) // 2
    sheet.paste(thumb, (ox, oy))
    if tile.frame is not None:
        draw.rectangle((x - 3, y - 3, x + side + 2, y + side + 2), outline=tile.frame, width=3)


def _fit(text: str, width: int) -> str:
    """Cut ``text`` to about ``width`` pixels of the default font (~7 px a character)."""
    limit = max(4, width // 7)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _save(sheet: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    return path
