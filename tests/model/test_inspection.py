"""inspect_image: normal files priced and accepted, hostile structures refused before decoding,
broken headers mapped to stable codes (never another exception), decode sizes predicted."""

from __future__ import annotations

import ast
import io
import random
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from model import inspection
from model.imaging import ImageDecodeError, decode_image
from model.inspection import ImageCost, inspect_image


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A colourful RGB picture of 8x8 blocks."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(coarse, np.ones((8, 8, 1), np.uint8))[: size[1], : size[0]])


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return struct.pack(">I", len(body)) + kind + body + crc


def png_header_only(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` grayscale pixels of ``bit_depth`` bits."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_with_scans(extra: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive JPEG whose last scan is repeated ``extra`` more times: libjpeg only warns
    about the bogus progression and decodes every scan, which is what makes such files slow."""
    data = encode(photo(size), "JPEG", progressive=True)
    last, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:eoi] + data[last:eoi] * extra + data[eoi:]


def insert_after_soi(jpeg: bytes, segments: bytes) -> bytes:
    return jpeg[:2] + segments + jpeg[2:]


def tiff_with_strips(strips: int, width: int = 4) -> bytes:
    """Uncompressed 8-bit grayscale TIFF of ``strips`` one-row strips, written by hand."""
    entries = [(256, 4, 1, width), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, strips, 0), (277, 3, 1, 1), (278, 4, 1, 1),
               (279, 4, strips, 0)]  # fmt: skip
    offsets_at = 8 + 2 + 12 * len(entries) + 4
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    pointers = {273: offsets_at, 279: counts_at}
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, n, pointers.get(tag, value))
        for tag, kind, n, value in entries
    )
    offsets = struct.pack(f"<{strips}I", *range(pixels_at, pixels_at + width * strips, width))
    counts = struct.pack(f"<{strips}I", *[width] * strips)
    pixels = bytes(range(256)) * (width * strips // 256 + 1)
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + b"\x00" * 4
        + offsets
        + counts
        + pixels[: width * strips]
    )


def exif_block(entries: list[tuple[int, int, int, int]], data: bytes = b"") -> bytes:
    """Little-endian EXIF: IFD0 with ``entries`` (tag, type, count, value), then ``data``."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + ifd + b"\x00" * 4 + data


def app_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


SAMPLES = {
    "jpeg": encode(photo(), "JPEG"),
    "progressive": encode(photo(), "JPEG", progressive=True),
    "png": encode(photo(), "PNG"),
    "tiff": encode(photo((16, 12)), "TIFF"),
    "gif": encode(photo((16, 12)), "GIF"),
    "webp": encode(photo(), "WEBP"),
}


def gif_first_image_at(gif: bytes) -> int:
    """Offset of the first block after a GIF's header and global palette."""
    return 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)


def header_span(name: str, data: bytes) -> range:
    """Cut lengths from just past the signature to just before the header is complete."""
    if name == "jpeg":
        return range(3, data.find(b"\xff\xda") + 10)  # up to the first scan's header
    if name == "png":
        return range(8, data.find(b"IDAT") + 4)
    if name == "gif":
        return range(6, data.find(b",", gif_first_image_at(data)) + 11)
    # TIFF: to its first directory's entry count. Pillow reads a directory cut short as far as
    # it goes (so does inspect_image); the decode then fails on the missing strips.
    return range(4, struct.unpack_from("<I", data, 4)[0] + 2)


def refused(data: bytes, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as err:
        inspect_image(data, **kwargs)
    return err.value


@pytest.mark.parametrize(
    ("name", "data", "fmt", "mode"),
    [
        ("jpeg", encode(photo(), "JPEG"), "JPEG", "RGB"),
        ("progressive jpeg", encode(photo(), "JPEG", progressive=True), "JPEG", "RGB"),
        ("grey jpeg", encode(photo().convert("L"), "JPEG"), "JPEG", "L"),
        ("cmyk jpeg", encode(photo().convert("CMYK"), "JPEG"), "JPEG", "CMYK"),
        ("png", encode(photo(), "PNG"), "PNG", "RGB"),
        ("rgba png", encode(photo().convert("RGBA"), "PNG"), "PNG", "RGBA"),
        ("palette png", encode(photo().convert("P"), "PNG", transparency=0), "PNG", "P"),
        ("16-bit png", encode(Image.new("I;16", (64, 48), 40000), "PNG"), "PNG", "I;16"),
        ("webp", encode(photo(), "WEBP"), "WEBP", "RGB"),
        ("tiff", encode(photo(), "TIFF"), "TIFF", "RGB"),
        ("deflate tiff", encode(photo(), "TIFF", compression="tiff_deflate"), "TIFF", "RGB"),
        ("gif", encode(photo(), "GIF"), "GIF", "P"),
        ("bmp", encode(photo(), "BMP"), "BMP", "RGB"),
        ("heic", encode(photo(), "HEIF"), "HEIF", "RGB"),
        pytest.param(
            "avif", encode(photo(), "AVIF") if features.check("avif") else b"", "AVIF", "RGB",
            marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF in this Pillow"),
        ),
    ],
)
def test_normal_files_are_priced_and_then_decode(name, data, fmt, mode):
    cost = inspect_image(data)
    assert isinstance(cost, ImageCost)
    assert (cost.format, cost.width, cost.height, cost.mode) == (fmt, 64, 48, mode)
    pixels = 64 * 48
    # At least the decoded pixels and the RGB result; at most a few dozen bytes per pixel more.
    assert 4 * pixels <= cost.decoded_bytes <= 40 * pixels + 4 * len(data) + 2 * 2**20
    assert cost.heavy == (fmt not in inspection.LIGHT_FORMATS)
    assert decode_image(data).size == (64, 48)


def test_mpo_and_rotated_jpeg_are_light():
    mpo = io.BytesIO()
    photo(seed=1).save(mpo, "MPO", save_all=True, append_images=[photo(seed=2)])
    cost = inspect_image(mpo.getvalue())
    assert (cost.format, cost.width, cost.heavy) == ("MPO", 64, False)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90: decode turns it upright, the cost is the same
    cost = inspect_image(encode(photo(), "JPEG", exif=exif.tobytes()))
    assert (cost.width, cost.height, cost.heavy) == (64, 48, False)


def test_large_jpeg_with_min_size_reports_the_drafted_decode_size():
    data = encode(Image.new("RGB", (4032, 3024), (40, 120, 40)), "JPEG")
    cost = inspect_image(data, min_size=224)
    assert (cost.width, cost.height) == (504, 378)  # draft at 1/8
    assert not cost.heavy and cost.decoded_bytes < inspection.HEAVY_DECODED_BYTES
    assert decode_image(data, min_size=224).size == (504, 378)
    full = inspect_image(data)
    assert (full.width, full.height) == (4032, 3024)
    assert full.heavy and full.decoded_bytes >= 2 * 4032 * 3024 * 4  # image and its copy


def test_progressive_jpeg_at_reduced_scale_is_charged_its_full_coefficient_buffer():
    data = encode(Image.new("RGB", (2048, 1536), (40, 120, 40)), "JPEG", progressive=True)
    drafted = inspect_image(data, min_size=224)
    assert (drafted.width, drafted.height) == (512, 384)  # 1536 // 224 = 6: draft at 1/4
    assert drafted.decoded_bytes >= 2048 * 1536 * 3  # 4:2:0: 1.5 samples per pixel, 2 bytes


def test_jpeg_with_too_many_scans_is_refused_from_its_bytes():
    data = jpeg_with_scans(150)
    assert decode_image(data).size == (64, 48)  # Pillow would decode every one of them
    err = refused(data)
    assert (err.code, err.status) == ("image_too_complex", 422)
    assert err.message == "JPEG has 160 scans (at most 100 allowed)"
    some = inspect_image(jpeg_with_scans(20))  # 30 scans: allowed, but the slow lane
    assert some.heavy and some.format == "JPEG"


@pytest.mark.parametrize(
    ("segments", "words"),
    [
        (b"\xff\xfe\x00\x03x" * 5000, "header segments"),  # thousands of tiny comments
        (b"\xff\xfe\xff\xff" + b"c" * 65533, None),  # one big comment: fine
        ((b"\xff\xfe\xff\xff" + b"c" * 65533) * 140, "bytes of metadata"),  # 9 MB of comments
        (b"\xff" * 70_000, "bytes outside its header segments"),  # fill bytes, skipped 1 by 1
        ((b"\xff\xdb\x02\x06" + (b"\x00" + bytes(64)) * 8) * 200, "bytes of tables"),
    ],
)
def test_jpeg_header_floods_are_refused(segments, words):
    data = insert_after_soi(encode(photo(), "JPEG"), segments)
    if words is None:
        assert inspect_image(data).format == "JPEG"
        return
    err = refused(data)
    assert err.code == "image_too_complex" and words in err.message


def test_png_text_flood_is_refused_quickly_before_pillow_sees_it(monkeypatch):
    png = encode(photo(), "PNG")
    at = png.find(b"IDAT") - 4
    data = png[:at] + chunk(b"tEXt", b"key\x00value") * 10_000 + png[at:]
    opened = []
    monkeypatch.setattr(inspection.Image, "open", lambda *a, **k: opened.append(a))
    start = time.perf_counter()
    err = refused(data)
    assert time.perf_counter() - start < 1.0
    assert not opened  # Pillow's own chunk walk would have taken the time
    assert err.code == "image_too_complex" and "ancillary" in err.message
    after_data = png[:-12] + chunk(b"tEXt", b"k\x00v") * 300 + png[-12:]  # read by load_end
    assert refused(after_data).code == "image_too_complex"
    idat_flood = png[:at] + chunk(b"IDAT", b"") * 25_000 + png[at:]
    assert "chunks" in refused(idat_flood).message


def test_animated_png_is_read_only_to_its_first_frame():
    frames = [photo(seed=i) for i in range(400)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    assert inspect_image(buf.getvalue()).format == "PNG"  # 400 fcTL after the first frame


def test_tiff_strips_pages_and_directories_are_capped():
    assert inspect_image(tiff_with_strips(1000)).height == 1000
    assert decode_image(tiff_with_strips(1000)).size == (4, 1000)
    err = refused(tiff_with_strips(inspection.TIFF_MAX_STRIPS + 1))
    assert err.code == "image_too_complex" and "strips" in err.message
    # An IFD claiming 5000 entries, and a first page followed by 70 empty ones.
    directory = struct.pack("<H", 5000) + struct.pack("<HHII", 700, 1, 1, 0) * 5000
    assert "has 5000 entries" in refused(b"II*\x00\x08\x00\x00\x00" + directory).message
    good = encode(photo(), "TIFF")
    ifd0 = struct.unpack_from("<I", good, 4)[0]
    next_at = ifd0 + 2 + 12 * struct.unpack_from("<H", good, ifd0)[0]
    end = len(good)
    chain = b"".join(struct.pack("<HI", 0, end + 6 * (i + 1) if i < 69 else 0) for i in range(70))
    pages = good[:next_at] + struct.pack("<I", end) + good[next_at + 4 :] + chain
    assert "TIFF has at least 65 pages (at most 64 allowed)" in refused(pages).message
    looped = good[:next_at] + struct.pack("<I", ifd0) + good[next_at + 4 :]
    assert inspect_image(looped).format == "TIFF"  # a loop back to page 1 ends the chain


def test_exif_directories_pillow_parses_in_python_are_capped():
    jpeg = encode(photo(), "JPEG")
    huge = exif_block([(0x9000 + i, 3, 1, 0) for i in range(3000)])
    err = refused(insert_after_soi(jpeg, app_segment(0xE1, huge)))
    assert err.code == "image_too_complex"
    assert err.message == "EXIF directory has 3000 entries (at most 1000 allowed)"
    # One EXIF sub-directory tag with 5000 RATIONAL values: Pillow makes an object of each.
    data_at = 8 + 2 + 2 * 12 + 4
    sub_at = data_at + 8 * 5000
    rationals = exif_block(
        [(0x0112, 3, 1, 6), (0x8769, 4, 1, sub_at)],
        struct.pack("<II", 1, 1) * 5000
        + struct.pack("<H", 1)
        + struct.pack("<HHII", 0x9204, 10, 5000, data_at)
        + b"\x00" * 4,
    )
    err = refused(insert_after_soi(jpeg, app_segment(0xE1, rationals)))
    assert "numeric tag values" in err.message
    small = exif_block([(0x0112, 3, 1, 6)])
    assert "EXIF segments" in refused(insert_after_soi(jpeg, app_segment(0xE1, small) * 17)).message
    assert inspect_image(insert_after_soi(jpeg, app_segment(0xE1, small))).width == 64


def test_photoshop_resources_are_capped():
    resource = b"8BIM\x04\x04\x00\x00" + bytes(4)  # empty IPTC block
    payload = b"Photoshop 3.0\x00" + resource * 1200
    err = refused(insert_after_soi(encode(photo(), "JPEG"), app_segment(0xED, payload)))
    assert err.code == "image_too_complex" and "Photoshop resources" in err.message


def test_tiff_tag_values_pillow_decodes_are_capped():
    good = encode(photo(), "TIFF", dpi=(72, 72))
    assert inspect_image(good).format == "TIFF"
    ifd0 = struct.unpack_from("<I", good, 4)[0]
    entries = range(ifd0 + 2, ifd0 + 2 + 12 * struct.unpack_from("<H", good, ifd0)[0], 12)
    at = next(at for at in entries if struct.unpack_from("<H", good, at)[0] == 282)  # XResolution
    bad = good[:at] + struct.pack("<HHII", 282, 5, 5000, len(good)) + good[at + 12 :]
    err = refused(bad + bytes(8 * 5000))
    assert err.code == "image_too_complex" and "numeric tag values" in err.message


def test_gif_extension_flood_is_refused():
    gif = encode(photo(), "GIF")
    at = gif_first_image_at(gif)
    comment = b"!\xfe" + b"\x01c" * 20_000 + b"\x00"
    assert "extension blocks" in refused(gif[:at] + comment + gif[at:]).message
    assert "stray bytes" in refused(gif[:at] + b"\x00" * 70_000 + gif[at:]).message


def test_16bit_png_bomb_is_charged_its_decode():
    data = png_header_only(7000, 7000)
    assert len(data) < 200
    cost = inspect_image(data)
    assert (cost.mode, cost.width, cost.height) == ("I;16", 7000, 7000)
    assert cost.decoded_bytes >= 7000 * 7000 * 2 and cost.heavy
    tall = inspect_image(png_header_only(1, 49_999_999, bit_depth=8))
    assert tall.decoded_bytes >= 49_999_999 * 8  # Pillow's row-pointer table alone
    assert tall.heavy


def test_pixel_limit_is_checked_on_the_declared_size(monkeypatch):
    err = refused(encode(photo((300, 200)), "PNG"), max_pixels=50_000)
    assert (err.code, err.status) == ("image_too_large", 413)
    err = refused(png_header_only(8000, 7000))
    assert (err.code, err.status) == ("image_too_large", 413)
    big = encode(Image.new("RGB", (800, 600)), "JPEG")
    assert refused(big, min_size=64, max_pixels=400_000).code == "image_too_large"
    # WebP: Pillow's open allocates the canvas, so the limit comes from the bytes, before it.
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (16383).to_bytes(3, "little") * 2
    opened = []
    monkeypatch.setattr(inspection.Image, "open", lambda *a, **k: opened.append(a))
    err = refused(b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x)
    assert (err.code, err.status, opened) == ("image_too_large", 413, [])


def test_empty_and_non_images_have_the_codes_of_decode_image():
    err = refused(b"")
    assert (err.code, err.status) == ("empty_file", 400)
    for data in (b"%PDF-1.4 not an image", b"hello world\n" * 10, encode(photo(), "ICO")):
        err = refused(data)
        assert (err.code, err.status) == ("unsupported_media_type", 415)
        with pytest.raises(ImageDecodeError) as decoded:
            decode_image(data)
        assert err.message == decoded.value.message


@pytest.mark.parametrize("name", ["jpeg", "png", "gif", "tiff"])
def test_headers_cut_short_are_corrupt(name):
    data = SAMPLES[name]
    for cut in header_span(name, data):
        err = refused(data[:cut])
        assert (err.code, err.status) == ("corrupt_image", 422), (cut, err.code, err.message)


def test_progressive_jpeg_cut_in_its_image_data_is_corrupt_without_decoding():
    data = SAMPLES["progressive"]
    for cut in (data[: len(data) // 2], data[:-2], data[:-2] + bytes(64)):  # no EOI after
        err = refused(cut)
        assert (err.code, err.status) == ("corrupt_image", 422)
        with pytest.raises(ImageDecodeError):
            decode_image(cut)  # libjpeg needs a marker after the last scan
    assert inspect_image(data + b"trailing bytes after EOI").format == "JPEG"
    # A single-scan JPEG can finish without its EOI (given a few bytes after the cut), so only
    # its decode can tell: inspect_image passes it on.
    baseline = SAMPLES["jpeg"]
    assert inspect_image(baseline[:-2] + bytes(64)).format == "JPEG"
    assert decode_image(baseline[:-2] + bytes(64)).size == (64, 48)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_prefix_and_random_damage_gives_a_cost_or_a_decode_error(name):
    data = SAMPLES[name]
    rng = random.Random(8)
    damaged = [data[:cut] for cut in range(1, len(data))]
    for _ in range(300):
        mutable = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mutable))
            mutable[at] = rng.choice((0x00, 0xFF, rng.randrange(256)))
        damaged.append(bytes(mutable))
    for sample in damaged:
        try:
            inspect_image(sample)
        except ImageDecodeError as err:
            assert err.code in ("corrupt_image", "unsupported_media_type", "image_too_large",
                                "image_too_complex"), err.code  # fmt: skip


def test_module_stays_torch_free():
    """The admission path imports it: only the standard library, Pillow and model.imaging."""
    tree = ast.parse(Path(inspection.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    third_party = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert third_party <= {"PIL", "model.imaging"}, third_party


def _jpeg_with_frame(marker: int, precision: int) -> bytes:
    """A baseline JPEG whose frame header is rewritten to ``marker`` and ``precision``."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (30, 140, 50)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = marker
    data[sof + 4] = precision
    return bytes(data)


@pytest.mark.parametrize(
    ("marker", "precision", "kind"),
    [
        (0xC1, 12, "12-bit"),
        (0xC3, 8, "lossless"),
        (0xC3, 16, "lossless"),
        (0xC5, 8, "hierarchical"),
    ],
)
def test_valid_jpeg_kinds_no_decoder_here_reads_are_415_not_damaged(marker, precision, kind):
    err = refused(_jpeg_with_frame(marker, precision))
    assert (err.status, err.code) == (415, "unsupported_media_type")
    assert err.message.startswith(f"{kind} JPEGs are not supported")


def test_text_that_starts_with_bm_is_not_an_image_rather_than_a_damaged_bmp():
    err = refused(b"BM: bank mark at the plot's north corner\n" * 4)
    assert (err.status, err.code) == (415, "unsupported_media_type")
