"""Price an upload's decode from its bytes and header, before anything is decoded.

Admission has to charge an image what its decode will cost *before* doing that work, and some
small files cost out of all proportion to their size: a 440 KB progressive JPEG with 2,000 scans
decodes for 7-25 s, a PNG with 800k text chunks keeps Pillow's own header parser busy for
seconds, a 112 KB 16-bit 7000x7000 PNG decodes to hundreds of MB. :func:`inspect_image` does
bounded work only (loops capped by the file length and the caps below, never a decode):

1. walks the container structure straight from the bytes, before Pillow touches them (Pillow's
   ``Image.open`` itself walks every JPEG segment and PNG chunk before the image data, so a flood
   must be stopped first), and refuses structures no real photo has (``image_too_complex``);
2. lets Pillow read the header lazily, with the error mapping and pixel limit of
   :func:`model.imaging.decode_image`, and applies the same JPEG ``draft``;
3. estimates the peak memory of ``decode_image`` and says whether the file belongs in the slow
   decode lane (:attr:`ImageCost.heavy`).

Imports only the standard library, Pillow and :mod:`model.imaging`: no torch.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from model.imaging import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    ImageDecodeError,
    open_formats,
    unsupported_format_error,
)

_MiB = 1024 * 1024

# JPEG. Phone photos carry ~10-20 segments before the first scan (APP0/APP1 EXIF/XMP, APP2
# ICC/MPF, DQT, SOF, DHT, DRI); extended XMP (old Google depth photos) adds one per 64 KB.
# Pillow spends ~2 us of Python per segment, so 256 costs nothing and a flood stops early.
JPEG_MAX_HEADER_SEGMENTS = 256
# APPn/COM bytes before the first scan. Phones write < 200 KB (EXIF with thumbnail <= 64 KB,
# XMP, ICC, MPF index; Ultra HDR gain maps and motion-photo videos sit after EOI, not here);
# extended XMP with a depth map and the original image can reach ~6 MB. Pillow keeps a copy of
# all of it and concatenates EXIF segments quadratically (250 x 64 KB: 0.25 s measured).
JPEG_MAX_METADATA_BYTES = 8 * _MiB
# EXIF must fit one APP1 segment (EXIF 2.3, 4.5.4); Pillow appends any further ones to the first,
# copying the whole so far each time.
JPEG_MAX_EXIF_SEGMENTS = 16
# Photoshop APP13 image resources ("8BIM" blocks): Pillow walks them in Python, 3.8 ms per 64 KB
# segment of empty ones (120 such segments: 0.43 s in Image.open, measured). Photoshop writes
# a few dozen.
JPEG_MAX_PHOTOSHOP_RESOURCES = 1000
# DQT/DHT/SOF/DRI bytes before the first scan: real files use < 1 KB. Pillow parses DQT tables
# and SOF components in Python (3 ms per 64 KB DQT segment measured), so bound them.
JPEG_MAX_TABLE_BYTES = 64 * 1024
# Bytes outside any segment before the first scan (fill, stuffing, junk): Pillow skips them one
# at a time in Python, ~0.4 us each (1 MB of 0xFF fill: 0.4 s measured). Real files: a handful.
JPEG_MAX_JUNK_BYTES = 64 * 1024
# Scans. libjpeg makes one pass over every coefficient block per scan, so scans multiply decode
# time. Progressive encoders write ~10 (libjpeg 10, mozjpeg 9-12); 100 leaves room for odd ones.
JPEG_MAX_SCANS = 100
# Segments other than scans between the first scan and EOI (DHT before each scan, DRI, ...):
# a progressive file has ~10.
JPEG_MAX_DATA_SEGMENTS = 1024
# How far the scan count is followed before reporting "at least"; ~1 us each.
_JPEG_COUNT_LIMIT = 10_000

# PNG. libpng writes 8 KiB IDAT chunks (20 MiB upload = 2,560), a few encoders write smaller
# ones; Pillow spends ~4 us of Python per chunk (100,000 tEXt: 0.41 s), so 20,000 is ~0.1 s.
PNG_MAX_CHUNKS = 20_000
# Everything but IHDR/PLTE/IDAT/IEND: real files carry ~15 kinds (pHYs, iCCP, tEXt, eXIf, ...).
PNG_MAX_ANCILLARY_CHUNKS = 256
# Pillow's own limits on text: 1 MiB decompressed per zTXt/iTXt/iCCP chunk, 64 MiB in all.
_PNG_TEXT_CHUNK_BYTES = 1 * _MiB
_PNG_TEXT_MEMORY_BYTES = 64 * _MiB

# TIFF. Real files carry ~15-60 tags per IFD (DNG/GeoTIFF a few hundred); Pillow reads each in
# Python. Also applied to the EXIF blocks of other formats, which Pillow parses the same way.
TIFF_MAX_IFD_ENTRIES = 1000
# Tag values Pillow turns into Python objects one by one (~3 us per RATIONAL: 1,000,000
# XResolution values made Image.open take 2.8 s, measured): the IFD0 tags its TIFF reader uses
# and every value of the EXIF, GPS and interoperability directories. Real files: a few hundred
# (an 8-bit ColorMap is 768); strip and tile arrays are capped by TIFF_MAX_STRIPS instead.
TIFF_MAX_VALUES = 4096
# Pages. decode_image reads only the first (1,000,000 chained empty pages: no slower, measured),
# but anything that counts or seeks pages walks the chain; 64 is far past any photo.
TIFF_MAX_PAGES = 64
# Strips/tiles of the first page. Cost per strip, measured with 100,000 one-row strips 16 px
# wide (so nearly all overhead): Pillow's open builds one Python tile per strip of an
# uncompressed TIFF (0.37 s, paid by inspect_image itself), its decode 0.79 s; deflate via
# libtiff 0.12 s. Real files: libtiff writes ~8 KB strips, so 20 MiB of uncompressed data is
# ~2,600 strips and a 50 MP 8-bit RGB image ~18,300; 256x256 tiles of 50 MP are ~800.
TIFF_MAX_STRIPS = 20_000

# GIF. Before the first image Pillow walks extension sub-blocks and skips stray bytes one at a
# time in Python (~0.4 us per sub-block, ~0.1 us per byte, measured). An XMP extension is a few
# hundred sub-blocks.
GIF_MAX_HEADER_BLOCKS = 16_384
GIF_MAX_JUNK_BYTES = 64 * 1024

# Light lane: formats decoded by fast C with no per-strip or per-run Python (TIFF strips and BMP
# RLE go through Python loops: a 128 KB RLE4 BMP of 16 MP took 1.2 s; a 6 MP HEIC 0.3 s), images
# whose decode fits in 32 MiB (a 12 MP JPEG drafted for a 224 input: ~7 MiB, progressive ~40
# MiB for its coefficient buffer), JPEGs with at most twice the scans an encoder writes (each
# scan is a pass over all coefficients: ~13 ms per scan at 12 MP, measured).
LIGHT_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
HEAVY_DECODED_BYTES = 32 * _MiB
HEAVY_JPEG_SCANS = 20


@dataclass(frozen=True)
class ImageCost:
    """What decoding one upload will produce and cost."""

    format: str  # Pillow format name (JPEG, PNG, ...)
    width: int  # size decoding will produce (after the JPEG draft for min_size)
    height: int
    mode: str  # Pillow mode of the decoded image before RGB conversion
    decoded_bytes: int  # estimated peak memory decode_image needs (see _estimate_decode_bytes)
    heavy: bool  # True: belongs in the slow decode lane
    # A plain JPEG: one Huffman-coded scan of 3 components (YCbCr), complete up to its EOI
    # marker. What a hardware decoder (nvJPEG) takes as it is; anything else is Pillow's.
    plain_jpeg: bool = False
    source_pixels: int = 0  # width x height as stored, before any draft
    orientation: int = 1  # EXIF orientation (1-8) that decode_image applies; 1 = as stored


@dataclass
class _Facts:
    """What the structural walk learned that the cost estimate needs."""

    scans: int = 0
    coefficient_bytes: int = 0  # libjpeg's whole-image coefficient buffer (multi-scan JPEG)
    metadata_bytes: int = 0  # metadata Pillow holds in memory (JPEG APPn/COM, PNG text)
    exif: bytes | None = None
    size: tuple[int, int] | None = None  # declared size, where needed before Pillow opens it
    plain_jpeg: bool = False  # see ImageCost.plain_jpeg


def inspect_image(
    data: bytes,
    min_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageCost:
    """Check ``data`` structurally, read its header and price its decode.

    Raises :class:`ImageDecodeError` with the codes of :func:`model.imaging.decode_image`
    (``empty_file`` 400, ``unsupported_media_type`` 415, ``corrupt_image`` 422 for a header cut
    short or broken, ``image_too_large`` 413 over ``max_pixels``) plus ``image_too_complex`` 422
    for structure whose decode cost is out of proportion to the file. ``min_size`` must be what
    the decode will be given: it sets the JPEG draft scale and so the decoded size.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty_file", "the uploaded file is empty", status=400)
    data = bytes(data)
    kind = _sniff(data)
    facts = _PRECHECKS[kind](data) if kind in _PRECHECKS else _Facts()
    if facts.size is not None:  # known before Pillow allocates anything for it
        _check_pixels(*facts.size, max_pixels)
    img = _open(data, kind)
    try:
        return _price(img, len(data), facts, min_size, max_pixels)
    except ImageDecodeError:
        raise
    except Exception as exc:  # a plugin failing on a header it accepted
        raise _corrupt(str(exc) or type(exc).__name__) from None
    finally:
        img.close()


def _price(
    img: Image.Image, data_len: int, facts: _Facts, min_size: int | None, max_pixels: int
) -> ImageCost:
    if img.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            "unsupported_media_type", f"image format {img.format} is not supported", 415
        )
    _check_pixels(*img.size, max_pixels)
    source_pixels = img.size[0] * img.size[1]
    if min_size and img.format in ("JPEG", "MPO"):
        img.draft("RGB", (min_size, min_size))  # exactly as decode_image does
    width, height = img.size
    exif = img.info.get("exif")
    if isinstance(exif, bytes) and exif != facts.exif:
        _check_exif(exif)
    decoded = _estimate_decode_bytes(img, data_len, facts)
    heavy = (
        decoded > HEAVY_DECODED_BYTES
        or img.format not in LIGHT_FORMATS
        or facts.scans > HEAVY_JPEG_SCANS
    )
    return ImageCost(
        img.format, width, height, img.mode, decoded, heavy,
        plain_jpeg=facts.plain_jpeg and img.format in ("JPEG", "MPO") and img.mode == "RGB",
        source_pixels=source_pixels,
        orientation=_orientation(img) if isinstance(exif, bytes) else 1,
    )


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation ``ImageOps.exif_transpose`` applies (it ignores values outside 2-8)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # EXIF that Pillow cannot parse: exif_transpose does nothing either
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --- error helpers -------------------------------------------------------------------------


def _corrupt(reason: str) -> ImageDecodeError:
    return ImageDecodeError("corrupt_image", f"the image could not be decoded ({reason})", 422)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            "image_too_large",
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            status=413,
        )


def _too_complex(what: str) -> ImageDecodeError:
    return ImageDecodeError("image_too_complex", what, 422)


def _over(count: int, cap: int, what: str, exact: bool = True) -> ImageDecodeError:
    """``what`` with {n} replaced by ``count`` ("at least" when the count stopped early)."""
    amount = str(count) if exact else f"at least {count}"
    return _too_complex(f"{what.format(n=amount)} (at most {cap} allowed)")


# --- format sniffing and Pillow's header read ----------------------------------------------

_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
}
_TIFF_PREFIXES = (
    b"MM\x00\x2a",
    b"II\x2a\x00",
    b"MM\x2a\x00",
    b"II\x00\x2a",
    b"MM\x00\x2b",
    b"II\x2b\x00",
)  # Pillow's TIFF prefixes, BigTIFF included


# A BMP's second header starts with its own size, one of these: a text that happens to start
# with "BM" is not a damaged BMP.
_BMP_INFO_HEADER_SIZES = frozenset(
    size.to_bytes(4, "little") for size in (12, 16, 40, 52, 56, 64, 108, 124)
)


def _sniff(data: bytes) -> str | None:
    """The supported format whose signature ``data`` carries, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in _TIFF_PREFIXES:
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and data[14:18] in _BMP_INFO_HEADER_SIZES:
        return "BMP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    return None


def _open(data: bytes, kind: str | None) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=list(open_formats()))
    except UnidentifiedImageError:
        if kind is not None and kind in open_formats():
            # It carries a supported format's signature, but Pillow cannot read its header.
            raise _corrupt(f"not a readable {kind} header") from None
        raise unsupported_format_error(data) from None
    except Exception as exc:  # recognised, but the header is broken (any plugin error)
        if kind is None:  # without a supported format's signature it is not a damaged image
            raise unsupported_format_error(data) from None
        raise _corrupt(str(exc) or type(exc).__name__) from None


# --- JPEG ----------------------------------------------------------------------------------

# A marker in entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart marker
# (D0-D7), TEM (01) or fill (FF). One byte of lookahead, so the search stays linear.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7\xff]")
# Markers Pillow's header parser reads without a length field (SOI, EOI, RSTn, JPG, JPGn).
_JPEG_STANDALONE = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
)
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_BASELINE = frozenset({0xC0, 0xC1})  # sequential Huffman, 8 bits (SOF0) or extended (SOF1)


# Lossless (SOF3/7/11/15) and hierarchical (SOF5-7, SOF13-15) JPEGs; libjpeg (Pillow) decodes
# neither, nor samples of other than 8 bits (12-bit medical or raw-derived files).
_JPEG_LOSSLESS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_JPEG_HIERARCHICAL = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})


def _check_jpeg_frame_kind(marker: int, precision: int) -> None:
    """415 for valid JPEG kinds no decoder here reads (they are not damaged files)."""
    kind = (
        "lossless" if marker in _JPEG_LOSSLESS
        else "hierarchical" if marker in _JPEG_HIERARCHICAL
        else f"{precision}-bit" if precision != 8
        else None
    )
    if kind:
        raise ImageDecodeError(
            "unsupported_media_type",
            f"{kind} JPEGs are not supported (8-bit baseline or progressive only)",
            status=415,
        )


def _check_jpeg(data: bytes) -> _Facts:
    facts = _Facts()
    n = len(data)
    pos, segments, junk, tables, resources = 2, 0, 0, 0, 0
    sof: tuple[int, int, int, list[tuple[int, int]]] | None = None
    exif_parts: list[bytes] = []
    # Header: mirror Pillow's parser up to the first scan.
    while True:
        if pos + 1 >= n:
            raise _corrupt("JPEG header is cut short before its first scan")
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            step = 2 if data[pos] == 0xFF and data[pos + 1] == 0x00 else 1
            if data[pos] != 0xFF:
                nxt = data.find(b"\xff", pos)
                step = (nxt if nxt >= 0 else n) - pos
            junk += step
            pos += step
            if junk > JPEG_MAX_JUNK_BYTES:
                raise _too_complex(
                    f"JPEG has more than {JPEG_MAX_JUNK_BYTES} bytes outside its header "
                    f"segments (at most {JPEG_MAX_JUNK_BYTES} allowed)"
                )
            continue
        marker = data[pos + 1]
        segments += 1
        if segments > JPEG_MAX_HEADER_SEGMENTS:
            raise _over(
                segments, JPEG_MAX_HEADER_SEGMENTS, "JPEG has {n} header segments", exact=False
            )
        if marker < 0xC0:
            raise _corrupt(f"invalid JPEG marker 0xFF{marker:02X}")
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            raise _corrupt("JPEG header is cut short before its first scan")
        length = max(struct.unpack_from(">H", data, pos + 2)[0], 2)  # under 2: Pillow and
        end = pos + 2 + length  # libjpeg read no payload
        if end > n:
            raise _corrupt("JPEG header segment runs past the end of the file")
        payload = data[pos + 4 : end]
        pos = end
        if marker == 0xDA:  # first scan
            if sof is None or not payload:
                raise _corrupt("JPEG scan without a frame header")
            break
        if marker >= 0xE0:  # APPn, COM (JPGn are standalone above)
            facts.metadata_bytes += length
            if facts.metadata_bytes > JPEG_MAX_METADATA_BYTES:
                raise _too_complex(
                    f"JPEG has more than {JPEG_MAX_METADATA_BYTES} bytes of metadata before "
                    f"its image data (at most {JPEG_MAX_METADATA_BYTES} allowed)"
                )
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
                exif_parts.append(payload if not exif_parts else payload[6:])
                if len(exif_parts) > JPEG_MAX_EXIF_SEGMENTS:
                    raise _over(
                        len(exif_parts),
                        JPEG_MAX_EXIF_SEGMENTS,
                        "JPEG has {n} EXIF segments",
                        exact=False,
                    )
            elif marker == 0xED and payload.startswith(b"Photoshop 3.0\x00"):
                resources += payload.count(b"8BIM")  # at least as many as Pillow walks
                if resources > JPEG_MAX_PHOTOSHOP_RESOURCES:
                    raise _over(
                        resources,
                        JPEG_MAX_PHOTOSHOP_RESOURCES,
                        "JPEG has {n} Photoshop resources",
                        exact=False,
                    )
            elif marker == 0xE2 and payload.startswith(b"MPF\x00"):
                _check_exif(payload[4:])
            continue
        tables += length
        if tables > JPEG_MAX_TABLE_BYTES:
            raise _too_complex(
                f"JPEG has more than {JPEG_MAX_TABLE_BYTES} bytes of tables before its image "
                f"data (at most {JPEG_MAX_TABLE_BYTES} allowed)"
            )
        if marker in _JPEG_SOF:
            if len(payload) < 6:
                raise _corrupt("JPEG frame header is cut short")
            _check_jpeg_frame_kind(marker, payload[0])
            height, width, ncomp = *struct.unpack_from(">HH", payload, 1), payload[5]
            comps = [(max(1, c >> 4), max(1, c & 15)) for c in payload[7 : 6 + 3 * ncomp : 3]]
            sof = (marker, width, height, comps)
    if exif_parts:
        facts.exif = b"".join(exif_parts)
        _check_exif(facts.exif)
    # Image data: count scans to EOI. Segments between scans are skipped by their length;
    # entropy-coded data by the marker search, as libjpeg does.
    assert sof is not None  # the header loop leaves only at a scan after a frame header
    marker, width, height, comps = sof
    # An image in several scans is buffered whole: libjpeg reads every scan and needs the EOI
    # (or another marker) after the last. A single-scan image is done with its last block, and
    # a few stray bytes after a cut are enough for that, so only its decode can tell.
    multi_scan = marker in _JPEG_PROGRESSIVE or payload[0] < len(comps)
    scans, others, walked, cut, last_was_scan, ended = 1, 0, 0, False, True, False
    while walked < _JPEG_COUNT_LIMIT:
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            # A multi-scan image's scan data running into the end of the file: libjpeg waits
            # for more and Pillow refuses it.
            cut = last_was_scan and multi_scan
            break
        walked += 1
        marker = data[found.start() + 1]
        if marker == 0xD9:
            ended = True
            break
        if marker == 0xD8:
            pos = found.end()
            continue
        if found.end() + 2 > n:
            break
        length = struct.unpack_from(">H", data, found.end())[0]
        pos = found.end() + max(length, 2)  # libjpeg skips nothing for a length under 2
        last_was_scan = marker == 0xDA
        if last_was_scan:
            scans += 1
        else:
            others += 1
    complete = walked < _JPEG_COUNT_LIMIT
    if scans > JPEG_MAX_SCANS:
        raise _over(scans, JPEG_MAX_SCANS, "JPEG has {n} scans", complete)
    if others > JPEG_MAX_DATA_SEGMENTS:
        raise _over(
            others,
            JPEG_MAX_DATA_SEGMENTS,
            "JPEG has {n} marker segments between its scans",
            complete,
        )
    if cut:
        raise _corrupt("JPEG image data is cut short")
    facts.scans = scans
    # A single scan ending in EOI: a file cut short (no EOI) stays with Pillow, which refuses it.
    facts.plain_jpeg = (
        complete and ended and scans == 1 and not multi_scan
        and sof[0] in _JPEG_BASELINE and len(comps) == 3
    )
    if comps and (multi_scan or scans > 1):
        facts.coefficient_bytes = _coefficient_bytes(width, height, comps)
    return facts


def _coefficient_bytes(width: int, height: int, comps: list[tuple[int, int]]) -> int:
    """libjpeg's whole-image coefficient buffer (jdcoefct.c): 64 16-bit coefficients per DCT
    block of every component at full resolution (a draft scales the IDCT, not this buffer),
    padded to whole MCUs. Needed whenever the image comes in more than one scan."""
    hmax, vmax = max(h for h, _ in comps), max(v for _, v in comps)
    total = 0
    for h, v in comps:
        blocks_wide = -(-width * h // (8 * hmax))
        blocks_high = -(-height * v // (8 * vmax))
        total += (-(-blocks_wide // h) * h) * (-(-blocks_high // v) * v) * 128
    return total


# --- PNG -----------------------------------------------------------------------------------

_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})


def _check_png(data: bytes) -> _Facts:
    facts = _Facts()
    n = len(data)
    pos, chunks, ancillary = 8, 0, 0
    seen_ihdr = in_data = after_data = fctl_first = False
    frames = 0  # acTL's frame count; Pillow stops reading at the second frame's fcTL
    while True:
        if pos + 8 > n:
            if not in_data:
                raise _corrupt("PNG header is cut short before its image data")
            break  # missing IEND or truncated data: the decode decides
        length = struct.unpack_from(">I", data, pos)[0]
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        chunks += 1
        if chunks > PNG_MAX_CHUNKS:
            raise _over(chunks, PNG_MAX_CHUNKS, "PNG has {n} chunks", exact=False)
        if ctype in (b"IDAT", b"fdAT"):
            if not seen_ihdr:
                raise _corrupt("PNG image data before its IHDR header")
            in_data = True
        elif in_data:
            after_data = True
        if ctype == b"IEND":
            break
        if ctype == b"fcTL" and after_data:
            # An IDAT after no fcTL is a default image that Pillow counts as one frame more.
            if frames + (not fctl_first) > 1:
                break
        elif ctype == b"fcTL" and not in_data:
            fctl_first = True
        if end > n:
            if not in_data:
                raise _corrupt("PNG header is cut short before its image data")
            break
        if ctype == b"IHDR":
            seen_ihdr = True
        elif ctype == b"acTL" and length >= 4:
            frames = struct.unpack_from(">I", data, pos + 8)[0]
        if ctype not in _PNG_CRITICAL and ctype != b"fdAT":
            ancillary += 1
            if ancillary > PNG_MAX_ANCILLARY_CHUNKS:
                raise _over(
                    ancillary,
                    PNG_MAX_ANCILLARY_CHUNKS,
                    "PNG has {n} ancillary (text/metadata) chunks",
                    exact=False,
                )
            if ctype in (b"zTXt", b"iTXt", b"iCCP"):
                facts.metadata_bytes += max(length, _PNG_TEXT_CHUNK_BYTES)
            elif ctype == b"tEXt":
                facts.metadata_bytes += length
            elif ctype == b"eXIf":
                facts.exif = data[pos + 8 : end - 4]
        pos = end
    facts.metadata_bytes = min(facts.metadata_bytes, _PNG_TEXT_MEMORY_BYTES)
    if facts.exif is not None:
        _check_exif(facts.exif)
    return facts


# --- TIFF and EXIF (EXIF is a little TIFF) -------------------------------------------------

# Types Pillow unpacks value by value into Python objects (SHORT, LONG, RATIONAL, ..., IFD8);
# BYTE, ASCII and UNDEFINED stay one bytes/str object.
_NUMERIC_TYPES = frozenset({3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18})
_IFD_POINTER_TYPES = frozenset({4, 13, 16, 18})  # LONG, IFD, LONG8, IFD8
_STRIP_TAGS = frozenset({273, 279, 324, 325})  # Strip/TileOffsets, Strip/TileByteCounts
# IFD0 tags Pillow's TIFF reader decodes when it opens a file (TiffImageFile._setup).
_TIFF_OPEN_TAGS = frozenset(
    {256, 257, 258, 259, 262, 266, 274, 277, 278, 282, 283, 284, 296, 320, 322, 323, 338, 339, 530}
)
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005


class _Ifds:
    """Reads TIFF directories as Pillow does, adding up the values Pillow decodes one by one."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.endian = "<" if buf[:2] == b"II" else ">"
        self.bigtiff = buf[2] == 0x2B  # Pillow's test: only byte 2
        self.values = 0

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        if offset >= len(self.buf):  # also keeps BigTIFF's 64-bit offsets out of struct
            raise struct.error("offset past the end")
        return struct.unpack_from(self.endian + fmt, self.buf, offset)

    def first(self) -> int:
        return self._unpack("Q", 8)[0] if self.bigtiff else self._unpack("I", 4)[0]

    def entries(self, offset: int) -> int:
        return self._unpack("Q" if self.bigtiff else "H", offset)[0]

    def next_ifd(self, offset: int, count: int) -> int:
        if self.bigtiff:
            return self._unpack("Q", offset + 8 + 20 * count)[0]
        return self._unpack("I", offset + 2 + 12 * count)[0]

    def check(
        self, offset: int, what: str, decoded: frozenset[int] | None = None
    ) -> tuple[int, int, dict[int, int]]:
        """Entry count, strip/tile count and EXIF/GPS/interop pointers of one directory.
        ``decoded``: the tags whose values Pillow decodes (None: all, as for EXIF)."""
        count = self.entries(offset)
        layout, size, first = ("HHQQ", 20, 8) if self.bigtiff else ("HHII", 12, 2)
        present = min(count, (len(self.buf) - offset - first) // size)  # Pillow stops at EOF
        if present > TIFF_MAX_IFD_ENTRIES:
            raise _over(present, TIFF_MAX_IFD_ENTRIES, what + " has {n} entries")
        strips, pointers = 0, {}
        for i in range(present):
            tag, kind, n, value = self._unpack(layout, offset + first + i * size)
            if decoded is not None and tag in _STRIP_TAGS:
                strips = max(strips, n)  # capped on their own by TIFF_MAX_STRIPS
            elif kind in _NUMERIC_TYPES and (decoded is None or tag in decoded):
                self.values += n
                if self.values > TIFF_MAX_VALUES:
                    raise _too_complex(
                        f"{what} has more than {TIFF_MAX_VALUES} numeric tag values "
                        f"(at most {TIFF_MAX_VALUES} allowed)"
                    )
            if tag in (_EXIF_IFD, _GPS_IFD, _INTEROP_IFD) and kind in _IFD_POINTER_TYPES:
                pointers[tag] = value
        return count, strips, pointers

    def check_exif_groups(self, pointers: dict[int, int]) -> None:
        """The directories Pillow decodes whole: EXIF and GPS (from IFD0), interoperability
        (from EXIF). One past the end is skipped, as Pillow skips it."""
        for tag, what in ((_EXIF_IFD, "EXIF directory"), (_GPS_IFD, "EXIF GPS directory")):
            if tag not in pointers:
                continue
            try:
                _, _, inner = self.check(pointers[tag], what)
                if tag == _EXIF_IFD and _INTEROP_IFD in inner:
                    self.check(inner[_INTEROP_IFD], "EXIF interoperability directory")
            except struct.error:
                continue


def _check_tiff(data: bytes) -> _Facts:
    ifds = _Ifds(data)
    try:
        offset = ifds.first()
        if offset == 0:
            raise _corrupt("TIFF has no image directory")
        count, strips, pointers = ifds.check(offset, "TIFF page 1", _TIFF_OPEN_TAGS)
    except struct.error:  # no directory to read: Pillow cannot open it either
        raise _corrupt("TIFF header is cut short") from None
    if strips > TIFF_MAX_STRIPS:
        raise _over(strips, TIFF_MAX_STRIPS, "TIFF has {n} strips/tiles in its first page")
    ifds.check_exif_groups(pointers)  # decoded by Pillow's TIFF load_end
    seen, pages = {offset}, 1
    while True:
        try:
            offset = ifds.next_ifd(offset, count)
            if offset == 0 or offset in seen:  # end of chain, or a loop (Pillow stops too)
                break
            count = ifds.entries(offset)
        except struct.error:
            break  # a later page past the end: only the first page is decoded
        seen.add(offset)
        pages += 1
        if pages > TIFF_MAX_PAGES:
            raise _over(pages, TIFF_MAX_PAGES, "TIFF has {n} pages", exact=False)
    return _Facts()


def _check_exif(blob: bytes) -> None:
    """The EXIF directories Pillow parses in Python: IFD0 on open, and IFD0, EXIF, GPS and
    interoperability whole when exif_transpose rewrites a rotated photo's EXIF. A malformed
    block is left to Pillow, which ignores or rejects it cheaply."""
    blob = re.sub(b"^(Exif\x00\x00){1,2}", b"", blob)
    if blob[:4] not in _TIFF_PREFIXES or len(blob) < 16:
        return
    ifds = _Ifds(blob)
    try:
        _, _, pointers = ifds.check(ifds.first(), "EXIF directory")
    except struct.error:
        return
    ifds.check_exif_groups(pointers)


# --- GIF -----------------------------------------------------------------------------------


_GIF_BLOCK_START = re.compile(rb"[!,;]")


def _check_gif(data: bytes) -> _Facts:
    n = len(data)
    if n < 13:
        raise _corrupt("GIF header is cut short")
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    blocks = junk = 0
    while True:
        if pos >= n:
            raise _corrupt("GIF ends before its first image")
        byte = data[pos]
        if byte == 0x2C:  # image descriptor: the first frame, all that is decoded
            if pos + 11 > n:
                raise _corrupt("GIF image descriptor is cut short")
            return _Facts()
        if byte == 0x3B:
            raise _corrupt("GIF has no image")
        if byte != 0x21:  # stray byte: Pillow skips it
            found = _GIF_BLOCK_START.search(data, pos)
            step = (found.start() if found else n) - pos
            junk += step
            pos += step
            if junk > GIF_MAX_JUNK_BYTES:
                raise _too_complex(
                    f"GIF has more than {GIF_MAX_JUNK_BYTES} stray bytes before its first "
                    f"image (at most {GIF_MAX_JUNK_BYTES} allowed)"
                )
            continue
        pos += 2  # extension introducer and label, then sub-blocks up to a zero length
        while True:
            if pos >= n:
                raise _corrupt("GIF ends before its first image")
            blocks += 1
            if blocks > GIF_MAX_HEADER_BLOCKS:
                raise _over(
                    blocks,
                    GIF_MAX_HEADER_BLOCKS,
                    "GIF has {n} extension blocks before its first image",
                    exact=False,
                )
            length = data[pos]
            pos += 1 + length
            if length == 0:
                break


# --- WebP ----------------------------------------------------------------------------------


def _check_webp(data: bytes) -> _Facts:
    """The canvas size: Pillow's WebP open allocates the decoder's canvas at once, so the pixel
    limit must come first. Anything unreadable is left to Pillow."""
    fourcc, body = data[12:16], data[20:30]
    size = None
    if fourcc == b"VP8X" and len(body) >= 10:
        size = (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
    elif fourcc == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    elif fourcc == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", body, 6)
        size = (width & 0x3FFF, height & 0x3FFF)
    return _Facts(size=size)


_PRECHECKS = {
    "JPEG": _check_jpeg,
    "PNG": _check_png,
    "TIFF": _check_tiff,
    "GIF": _check_gif,
    "WEBP": _check_webp,
}


# --- memory estimate -----------------------------------------------------------------------


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel in Pillow's storage (RGB is stored as 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _estimate_decode_bytes(img: Image.Image, data_len: int, facts: _Facts) -> int:
    """Peak memory of ``decode_image`` for ``img``, an upper estimate.

    With P = width*height of the decoded size and b = bytes per pixel of its mode, a Pillow
    image costs ``img(b) = P*b + 8*height`` (pixels plus a row-pointer table). Stages, in order:

    - load: ``img(b)`` + the decoder's own working memory: a multi-scan JPEG's full-resolution
      coefficient buffer (2 bytes per sample, draft or not); WebP's canvas and previous frame
      plus the RGBA bytes handed to Pillow (12P); HEIF's YCbCr planes and interleaved output
      (8P); libtiff's strip or RGBA buffer (up to 4P); BMP RLE's Python bytearray and its copy
      (2bP); a GIF disposal image (img(4));
    - exif_transpose: a copy beside the decoded image, ``2*img(b)``;
    - _to_rgb beside that copy: RGB nothing more; I;16/I/F the bytes numpy reads (bP), the
      float64 array, a float64 temporary and its clipped float64 copy (24P); RGBA/LA/PA the RGBA
      copy, white background, composite and RGB result (4*img(4)); P with transparency one RGBA
      conversion more (5*img(4)); other modes the RGB result (img(4)).

    Result: ``1.05 * (max of the stages + 2*len(data) + 2*metadata) + 1 MiB``: the upload's
    bytes in the decode process plus the copy some decoders read (WebP, TIFF), metadata Pillow
    keeps and copies (JPEG APPn/COM, PNG text up to Pillow's 64 MiB limit), and slack for
    allocator fragmentation and decoder state.

    Measured (peak RSS increase over decode_image in a fresh process, VmHWM reset before; the
    upload's bytes were loaded already, so they are not in the measurement) vs estimate, MiB:
    4000x3000 JPEG 92.0 vs 101.7, with min_size=224 2.0 vs 7.1, progressive with min_size=224
    35.6 vs 41.1 (coefficient buffer); 16-bit PNG 3000x3000 240.4 vs 253.4, 7000x7000 1215.6
    vs 1375.1; 2000x2000 RGBA PNG 76.3 vs 81.9, P with transparency 80.2 vs 85.4; 1x5,000,000
    PNG 100.0 vs 106.2 (row pointers); 3000x2000 WebP 92.2 vs 97.7, HEIC 47.4 vs 73.9, AVIF
    64.4 vs 97.3 (the default 12P for its decoder), deflate TIFF 45.9 vs 50.8; 2000x2000 GIF 19.1
    vs 23.5.
    """
    width, height = img.size
    pixels = width * height
    bpp = _bytes_per_pixel(img.mode)

    def image(b: int) -> int:
        return pixels * b + 8 * height

    codec = img.tile[0].codec_name if img.tile else ""
    extra = {
        "JPEG": facts.coefficient_bytes,
        "MPO": facts.coefficient_bytes,
        "PNG": 2 * (8 * width + 1),  # two unfiltering rows
        "WEBP": 12 * pixels,
        "HEIF": 8 * pixels,
        "TIFF": 4 * pixels if codec == "libtiff" else 0,
        "BMP": 2 * pixels * bpp if codec == "bmp_rle" else 0,
        "GIF": image(4),
    }.get(img.format or "", 12 * pixels)
    mode = img.mode
    if mode == "RGB":
        convert = 0
    elif mode.startswith("I;16") or mode in ("I", "F"):
        convert = pixels * bpp + 24 * pixels
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        convert = 4 * image(4)
    elif mode == "P" and "transparency" in img.info:
        convert = 5 * image(4)
    else:
        convert = image(4)
    # The resize to the model's input keeps one more row table beside the RGB image: measured on
    # a 1x15,000,000 PNG (row tables dominate) 400 MiB against 316 MiB estimated without it.
    resize_rows = 8 * height
    peak = max(image(bpp) + extra, 2 * image(bpp), image(bpp) + convert) + resize_rows
    return int(1.05 * (peak + 2 * data_len + 2 * facts.metadata_bytes)) + _MiB
