"""Image files built byte by byte: the structures encoders never write but attackers do.

Pillow writes well-formed files only. A decoder's costs live in structure it must walk before
(or while) it decodes: JPEG scans and marker segments, PNG chunks, TIFF strips, GIF frames, and
the dimensions a header claims. These helpers take small real files and bend exactly one of
those, so each hostile file is "valid except for one thing".
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# -- PNG ------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return struct.pack(">I", len(data)) + kind + data + crc


def png_file(
    width: int,
    height: int,
    idat: bytes,
    *,
    bit_depth: int = 8,
    color_type: int = 0,
    interlace: int = 0,
    before_idat: Iterable[bytes] = (),
) -> bytes:
    """A PNG from an already-compressed IDAT stream and extra (already framed) chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return b"".join(
        [
            PNG_SIGNATURE,
            png_chunk(b"IHDR", ihdr),
            *before_idat,
            png_chunk(b"IDAT", idat),
            png_chunk(b"IEND", b""),
        ]
    )


def png_repeated_rows(
    width: int, height: int, row: bytes, *, bit_depth: int = 8, color_type: int = 0
) -> bytes:
    """A PNG whose every scanline is ``row`` (filter byte included), compressed in pieces so a
    100 MB image costs a few MB of memory to build and ~100 KB on disk."""
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (4 << 20) // len(row))
    piece = row * rows_per_piece
    out = []
    remaining = height
    while remaining:
        n = min(rows_per_piece, remaining)
        out.append(compressor.compress(piece if n == rows_per_piece else row * n))
        remaining -= n
    out.append(compressor.flush())
    return png_file(width, height, b"".join(out), bit_depth=bit_depth, color_type=color_type)


def png_16bit_gray_gradient(width: int, height: int) -> bytes:
    """16-bit grayscale, a horizontal ramp repeated on every row (tiny file, big decode)."""
    ramp = np.linspace(0, 65535, width).astype(">u2").tobytes()
    return png_repeated_rows(width, height, b"\x00" + ramp, bit_depth=16, color_type=0)


def png_rgb_gradient(width: int, height: int) -> bytes:
    """8-bit RGB, a colour ramp repeated on every row."""
    x = np.linspace(0, 255, width).astype(np.uint8)
    row = np.stack([x, x[::-1], np.full_like(x, 128)], axis=1).tobytes()
    return png_repeated_rows(width, height, b"\x00" + row, bit_depth=8, color_type=2)


def png_16bit_rgb(pixels: np.ndarray) -> bytes:
    """16-bit-per-channel RGB PNG (what photo editors export), from a uint16 (H, W, 3) array."""
    height, width, _ = pixels.shape
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), pixels.astype(">u2").view(np.uint8).reshape(height, -1)],
        axis=1,
    )
    return png_file(width, height, zlib.compress(rows.tobytes()), bit_depth=16, color_type=2)


ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)  # (x0, y0, dx, dy) of each pass


def png_interlaced(pixels: np.ndarray) -> bytes:
    """Adam7-interlaced 8-bit RGB PNG (Pillow reads these but cannot write them)."""
    height, width, _ = pixels.shape
    raw = []
    for x0, y0, dx, dy in ADAM7:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        filters = np.zeros((sub.shape[0], 1), np.uint8)
        raw.append(np.concatenate([filters, sub.reshape(sub.shape[0], -1)], axis=1).tobytes())
    return png_file(width, height, zlib.compress(b"".join(raw)), color_type=2, interlace=1)


def png_with_text_chunks(base: Image.Image, count: int) -> bytes:
    """A small valid PNG with ``count`` tEXt chunks before its image data."""
    text = png_chunk(b"tEXt", b"k\x00v")
    rgb = np.asarray(base.convert("RGB"))
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    idat = zlib.compress(rows.tobytes())
    return png_file(width, height, idat, color_type=2, before_idat=[text * count])


def png_ztxt_bomb(base: Image.Image, inflated_bytes: int = 200_000_000) -> bytes:
    """A small PNG with one zTXt chunk that inflates to ``inflated_bytes`` (~200 KB on disk)."""
    compressor = zlib.compressobj(9)
    piece = b"\x00" * (4 << 20)
    parts = [compressor.compress(piece) for _ in range(inflated_bytes // len(piece))]
    parts.append(compressor.flush())
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + b"".join(parts))
    rgb = np.asarray(base.convert("RGB"))
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    return png_file(width, height, zlib.compress(rows.tobytes()), color_type=2, before_idat=[ztxt])


# -- JPEG -----------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """Split a JPEG into (marker, bytes) pieces; a scan's piece includes its entropy data."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pieces: list[tuple[int, bytes]] = [(0xD8, data[:2])]
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"expected a marker at {pos}"
        marker = data[pos + 1]
        if marker == 0xD9:
            pieces.append((marker, data[pos : pos + 2]))
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not RSTn/stuffing
            while True:
                end = data.index(b"\xff", end)
                nxt = data[end + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    end += 2
                    continue
                break
        pieces.append((marker, data[pos:end]))
        pos = end
    return pieces


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    assert len(payload) <= 65533
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_insert_after_soi(jpeg: bytes, segments: Iterable[bytes]) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def jpeg_with_extra_scans(progressive_jpeg: bytes, total_scans: int) -> bytes:
    """The progressive JPEG with scans appended until it has ``total_scans``: copies of its
    last scan's header (an AC refinement) with no entropy data (14 bytes each).

    libjpeg only warns about the out-of-order progression and the missing data, and walks the
    whole coefficient buffer once per scan: the classic way to make a small file decode for
    seconds.
    """
    pieces = jpeg_segments(progressive_jpeg)
    scans = [p for m, p in pieces if m == 0xDA]
    assert len(scans) > 1, "needs a progressive JPEG"
    last = scans[-1]
    header = last[: 2 + struct.unpack(">H", last[2:4])[0]]
    extra = header * (total_scans - len(scans))
    return b"".join(p for m, p in pieces if m != 0xD9) + extra + b"\xff\xd9"


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOFn) claiming ``width`` x ``height``."""
    out = bytearray(jpeg)
    for marker, piece in jpeg_segments(jpeg):
        if marker in (0xC0, 0xC1, 0xC2):
            pos = jpeg.index(piece)
            struct.pack_into(">HH", out, pos + 5, height, width)
            return bytes(out)
    raise ValueError("no frame header")


def jpeg_with_comments(jpeg: bytes, count: int) -> bytes:
    """``count`` maximal (64 KiB) COM segments before the image data."""
    com = jpeg_segment(0xFE, b"A" * 65533)
    return jpeg_insert_after_soi(jpeg, [com] * count)


def jpeg_with_huge_icc(jpeg: bytes, chunks: int = 255) -> bytes:
    """An ICC profile split over ``chunks`` APP2 segments (the format's maximum: ~16 MB)."""
    payload = 65533 - 14
    segments = [
        jpeg_segment(0xE2, b"ICC_PROFILE\x00" + bytes([i + 1, chunks]) + b"\x11" * payload)
        for i in range(chunks)
    ]
    return jpeg_insert_after_soi(jpeg, segments)


# -- TIFF, GIF, WebP ------------------------------------------------------------------------


def tiff_many_strips(width: int, strips: int) -> bytes:
    """An 8-bit grayscale TIFF of ``width`` x ``strips`` with one row per strip (PackBits:
    2 bytes a strip), i.e. ``strips`` entries in StripOffsets and StripByteCounts."""
    assert 1 <= width <= 128
    strip = bytes([257 - width, 0x80])  # PackBits: repeat 0x80 `width` times
    n_tags = 9
    ifd_at = 8
    offsets_at = ifd_at + 2 + n_tags * 12 + 4
    counts_at = offsets_at + 4 * strips
    data_at = counts_at + 2 * strips
    tags = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, strips),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample, SHORT
        (259, 3, 1, 32773),  # Compression: PackBits
        (262, 3, 1, 1),  # Photometric: BlackIsZero
        (273, 4, strips, offsets_at),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 1),  # RowsPerStrip
        (279, 3, strips, counts_at),  # StripByteCounts, SHORT
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at))
    out += struct.pack("<H", n_tags)
    for tag, kind, count, value in tags:
        packed = (
            struct.pack("<H", value) + b"\x00\x00"
            if kind == 3 and count == 1
            else struct.pack("<I", value)
        )
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0)
    out += np.arange(data_at, data_at + 2 * strips, 2, dtype="<u4").tobytes()
    out += np.full(strips, 2, dtype="<u2").tobytes()
    out += strip * strips
    return bytes(out)


def _gif_parts(img: Image.Image) -> tuple[bytes, bytes]:
    """(header + screen descriptor + colour table, one image block) of a single-frame GIF."""
    data = encode(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "GIF")
    flags = data[10]
    table = 3 * (2 ** ((flags & 7) + 1)) if flags & 0x80 else 0
    head_end = 13 + table
    block_start = data.index(b"\x2c", head_end)  # image descriptor (skip any extensions)
    return data[:head_end], data[block_start:-1]  # drop the trailer (0x3B)


def gif_many_frames(img: Image.Image, frames: int) -> bytes:
    """An animated GIF with ``frames`` frames (each with a 1/100 s delay)."""
    head, block = _gif_parts(img)
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"
    return head + loop + (control + block) * frames + b"\x3b"


def gif_with_screen(img: Image.Image, width: int, height: int) -> bytes:
    """A one-frame GIF whose logical screen claims ``width`` x ``height``."""
    head, block = _gif_parts(img)
    return head[:6] + struct.pack("<HH", width, height) + head[10:] + block + b"\x3b"


def webp_lossless_with_size(img: Image.Image, width: int, height: int) -> bytes:
    """A lossless (VP8L) WebP whose bitstream header claims ``width`` x ``height``."""
    data = bytearray(encode(img, "WEBP", lossless=True))
    pos = data.index(b"VP8L") + 8
    assert data[pos] == 0x2F, "VP8L signature"
    bits = struct.unpack("<I", data[pos + 1 : pos + 5])[0]
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    struct.pack_into("<I", data, pos + 1, bits)
    return bytes(data)
