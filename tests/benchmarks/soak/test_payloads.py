"""Request bodies: parse as the server would, built from a corpus module (a stand-in here)."""

import email.parser
import io
import sys
import types

import pytest
from PIL import Image

from benchmarks.serving.multipart import content_type
from benchmarks.soak.mix import KINDS
from benchmarks.soak.payloads import BATCH, PREDICT, CorpusMissing, build_payloads, load_corpus
from benchmarks.soak.payloads import multipart_files as build_multipart


def parts(body: bytes) -> list[tuple[str, str, bytes]]:
    raw = f"Content-Type: {content_type()}\r\n\r\n".encode() + body
    msg = email.parser.BytesParser().parsebytes(raw)
    return [
        (
            p.get_param("name", header="content-disposition"),
            p.get_filename(),
            p.get_payload(decode=True),
        )
        for p in msg.get_payload()
    ]


def test_multipart_files_repeats_the_field_once_per_file():
    files = [("a.jpg", b"\xff\xd8first"), ("b.jpg", b"\xff\xd8second\r\n")]
    assert parts(build_multipart("files", files)) == [
        ("files", "a.jpg", b"\xff\xd8first"),
        ("files", "b.jpg", b"\xff\xd8second\r\n"),
    ]


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (seed * 40 % 256, 80, 120)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture()
def stand_in_corpus(monkeypatch) -> str:
    """Until tests/hostile/corpus.py lands: the three functions the harness needs, tiny."""
    module = types.ModuleType("soak_stand_in_corpus")
    module.ordinary_photo = _jpeg
    module.expensive_files = lambda: {"big.png": b"\x89PNG fake", "huge.jpg": b"\xff\xd8 fake"}
    module.hostile_files = lambda: {"truncated.jpg": _jpeg(1)[:20], "text.txt": b"hello"}
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_build_payloads_gives_every_kind_with_the_right_route_and_field(stand_in_corpus):
    payloads = build_payloads(stand_in_corpus, photo_count=8, phone_count=1)
    assert set(payloads) == set(KINDS)
    assert len(payloads["photo"]) == 8 and len(payloads["batch4"]) == 2
    assert all(
        p.path == PREDICT for k in ("photo", "phone", "expensive", "hostile") for p in payloads[k]
    )
    batch = payloads["batch4"][1]
    assert batch.path == BATCH and batch.files == 4
    assert [(f, n) for f, n, _ in parts(batch.body)] == [
        ("files", f"photo-0{i}.jpg") for i in range(4, 8)
    ]
    ((field, name, data),) = parts(payloads["hostile"][1].body)
    assert (field, name, data) == ("file", "text.txt", b"hello")
    with Image.open(io.BytesIO(parts(payloads["phone"][0].body)[0][2])) as phone:
        assert phone.size == (4032, 3024)


def test_missing_corpus_says_what_it_needs():
    with pytest.raises(CorpusMissing, match="ordinary_photo"):
        load_corpus("no_such_module_for_soak")


def test_corpus_without_the_functions_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "soak_empty_corpus", types.ModuleType("soak_empty_corpus"))
    with pytest.raises(CorpusMissing, match="lacks"):
        load_corpus("soak_empty_corpus")
