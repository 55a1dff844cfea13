"""Reading multipart uploads: limits are enforced before or while the body streams in."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request

from app.admission import MemoryBudget
from app.errors import ApiError
from app.uploads import MAX_PART_HEADER_BYTES, MAX_PART_HEADERS, body_limit, read_uploads

BOUNDARY = "testboundary"


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


class StreamedRequest:
    """A Starlette request whose body arrives in chunks; counts how much was pulled."""

    def __init__(
        self,
        body: bytes,
        chunk: int = 1024,
        content_length: int | None = None,
        delay_s: float = 0.0,
        content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    ):
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        self.pulled = 0
        self.delay_s = delay_s  # before each chunk: a slow client
        headers = [(b"content-type", content_type.encode()), *extra_headers]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        self.request = Request(scope, self._receive)

    async def _receive(self):
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        index = self.pulled
        self.pulled += 1
        more = index + 1 < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[index], "more_body": more}


def read(
    streamed: StreamedRequest,
    field: str = "file",
    max_files: int = 1,
    max_bytes: int = 10_000,
    budget: MemoryBudget | None = None,
    receive_timeout_s: float = 60.0,
    receive_idle_s: float | None = None,
    raw_body: bool = False,
):
    budget = budget or MemoryBudget(1 << 30, wait_s=0.0)

    async def main():
        async with budget.charge() as charge:
            uploads = await read_uploads(
                streamed.request, field, max_files, max_bytes, charge, receive_timeout_s,
                receive_idle_s=receive_idle_s, raw_body=raw_body,
            )
            assert budget.in_use >= sum(len(u.data) for u in uploads), "received bytes charged"
            return uploads

    uploads = asyncio.run(main())
    assert budget.in_use == 0, "the charge is given back when the request ends"
    return uploads


def error_of(streamed: StreamedRequest, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as err:
        read(streamed, **kwargs)
    return err.value


def test_reads_files_in_order_with_names_and_ignores_other_fields():
    body = multipart(
        ("files", "a.jpg", b"A" * 3000),
        ("note", None, b"hello"),
        ("files", "b.png", b"B" * 10),
    )
    uploads = read(StreamedRequest(body), field="files", max_files=5)
    assert [(u.filename, u.data) for u in uploads] == [("a.jpg", b"A" * 3000), ("b.png", b"B" * 10)]


def test_declared_content_length_over_limit_is_refused_before_reading():
    body = multipart(("file", "big.jpg", b"x" * 50_000))
    streamed = StreamedRequest(body, content_length=len(body))
    with pytest.raises(ApiError) as err:
        read(streamed, max_bytes=10_000)
    assert err.value.status == 413
    assert "INVASIVE_MAX_UPLOAD_BYTES" in err.value.message, "names the setting"
    assert streamed.pulled == 0, "not a single body chunk may be read"


def test_undeclared_oversized_file_stops_the_stream_at_the_limit():
    body = multipart(("file", "big.jpg", b"x" * 500_000))
    streamed = StreamedRequest(body, chunk=1024)  # chunked: no Content-Length
    with pytest.raises(ApiError) as err:
        read(streamed, max_bytes=10_000)
    assert (err.value.status, err.value.code) == (413, "file_too_large")
    assert streamed.pulled < 20, f"read {streamed.pulled} of {len(streamed.chunks)} chunks"


def test_whole_body_is_capped_even_when_every_part_is_small():
    parts = [("other", None, b"y" * 10_000) for _ in range(60)]
    streamed = StreamedRequest(multipart(*parts), chunk=4096)
    with pytest.raises(ApiError) as err:
        read(streamed, max_bytes=20_000)
    assert err.value.status == 413
    assert streamed.pulled * 4096 <= body_limit(1, 20_000) + 4096


def test_too_many_files_is_413():
    body = multipart(*[("files", f"{i}.jpg", b"z") for i in range(4)])
    with pytest.raises(ApiError) as err:
        read(StreamedRequest(body), field="files", max_files=3)
    assert (err.value.status, err.value.code) == (413, "too_many_files")


def test_missing_boundary_and_missing_field():
    streamed = StreamedRequest(b"")
    streamed.request.scope["headers"] = [(b"content-type", b"multipart/form-data")]
    with pytest.raises(ApiError) as err:
        read(streamed)
    assert err.value.status == 400
    with pytest.raises(ApiError) as err:
        read(StreamedRequest(multipart(("other", "x.jpg", b"1"))))
    assert (err.value.status, err.value.code) == (422, "missing_file")


def test_boundary_longer_than_rfc_2046_allows_is_400_not_500():
    streamed = StreamedRequest(b"")
    streamed.request.scope["headers"] = [
        (b"content-type", b"multipart/form-data; boundary=" + b"b" * 300)
    ]
    err = error_of(streamed)
    assert (err.status, err.code) == (400, "invalid_multipart")
    assert "70" in err.message


def test_body_cut_before_the_closing_boundary_is_400():
    body = multipart(("file", "a.jpg", b"A" * 100))
    err = error_of(StreamedRequest(body[:-30]))
    assert (err.status, err.code) == (400, "invalid_multipart")


def file_part_with_headers(extra: str, filename: str = "a.jpg") -> bytes:
    """A body of one file part, ``AAAA``, whose headers are followed by ``extra`` lines."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"{extra}\r\nAAAA\r\n--{BOUNDARY}--\r\n"
    ).encode()


def test_oversized_part_headers_are_400():
    body = file_part_with_headers(f"X-Padding: {'p' * (MAX_PART_HEADER_BYTES + 10)}\r\n")
    err = error_of(StreamedRequest(body))
    assert (err.status, err.code) == (400, "invalid_multipart")
    assert f"over {MAX_PART_HEADER_BYTES} bytes" in err.message


def test_part_headers_within_the_documented_limits_are_read():
    """python-multipart's own limits (a 4,224-byte line, 8 headers) answered a 6 kB file name
    or 9 header lines with a bare "malformed" below the documented 8 KiB."""
    name = "n" * 6000 + ".jpg"
    extra = "".join(f"X-Extra-{i}: {i}\r\n" for i in range(10))
    (upload,) = read(StreamedRequest(file_part_with_headers(extra, filename=name)))
    assert (upload.filename, upload.data) == (name, b"AAAA")


def test_a_part_with_too_many_header_lines_is_400_saying_so():
    extra = "".join(f"X-{i}: {i}\r\n" for i in range(MAX_PART_HEADERS))
    err = error_of(StreamedRequest(file_part_with_headers(extra)))
    assert (err.status, err.code) == (400, "invalid_multipart")
    assert f"more than {MAX_PART_HEADERS} header lines" in err.message


def test_too_many_parts_is_413_even_if_they_are_not_files():
    body = multipart(*[("note", None, b"x") for _ in range(40)])
    err = error_of(StreamedRequest(body), field="files", max_files=3)
    assert (err.status, err.code) == (413, "too_many_parts")


@pytest.mark.parametrize("size", [10, 50_000])
def test_photo_under_the_wrong_field_name_is_422_naming_the_right_one(size):
    # Large or small, a file under another name is not stored and not a 413: the user needs
    # to know which field to use.
    body = multipart(("image", "photo.jpg", b"J" * size))
    err = error_of(StreamedRequest(body), max_bytes=60_000)
    assert (err.status, err.code) == (422, "missing_file")
    assert "'image'" in err.message and "'file'" in err.message


def test_part_without_content_disposition_is_422_missing_file():
    body = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\nJJJJ\r\n--{BOUNDARY}--\r\n"
    err = error_of(StreamedRequest(body.encode()))
    assert (err.status, err.code) == (422, "missing_file")
    assert "Content-Disposition" in err.message


def test_upload_bigger_than_the_whole_memory_budget_is_413():
    body = multipart(("file", "a.jpg", b"A" * 8000))
    err = error_of(StreamedRequest(body), budget=MemoryBudget(4096, wait_s=0.0))
    assert (err.status, err.code) == (413, "payload_too_large")
    assert "memory budget" in err.message


def test_only_the_kept_files_are_charged_not_fields_that_are_dropped():
    """A text field (or a file under another name) is dropped as it passes: charging it let one
    client hold the whole memory budget with a stalled 380 MB text field."""
    body = multipart(("note", None, b"N" * 8000), ("file", "a.jpg", b"A" * 1000))
    (upload,) = read(StreamedRequest(body), budget=MemoryBudget(4096, wait_s=0.0))
    assert upload.data == b"A" * 1000


def test_a_body_trickling_past_the_receive_deadline_is_408_and_its_charge_returned():
    body = multipart(("file", "a.jpg", b"x" * 4000))
    budget = MemoryBudget(1 << 30, wait_s=0.0)
    slow = StreamedRequest(body, chunk=100, delay_s=0.05)  # ~2 s for the whole body
    started = time.monotonic()
    err = error_of(slow, receive_timeout_s=0.5, budget=budget)
    assert (err.status, err.code) == (408, "receive_timeout")
    assert "INVASIVE_RECEIVE_TIMEOUT_S" in err.message
    assert time.monotonic() - started < 1.5, "answered at the deadline, not after the body"
    assert budget.in_use == 0


def test_a_stalled_body_is_408_after_the_idle_time_not_the_whole_deadline():
    body = multipart(("file", "a.jpg", b"x" * 4000))
    budget = MemoryBudget(1 << 30, wait_s=0.0)
    stalled = StreamedRequest(body, chunk=1000, delay_s=0.6)  # silent 0.6 s before each chunk
    started = time.monotonic()
    err = error_of(stalled, receive_timeout_s=30.0, receive_idle_s=0.2, budget=budget)
    assert (err.status, err.code) == (408, "receive_timeout")
    assert "INVASIVE_RECEIVE_IDLE_S" in err.message
    assert time.monotonic() - started < 1.5
    assert budget.in_use == 0


def test_a_slow_but_steady_body_is_not_idle():
    body = multipart(("file", "a.jpg", b"x" * 1000))
    steady = StreamedRequest(body, chunk=100, delay_s=0.05)  # ~0.6 s, never 0.2 s silent
    (upload,) = read(steady, receive_timeout_s=5.0, receive_idle_s=0.2)
    assert upload.data == b"x" * 1000


def test_a_slow_body_within_the_deadline_is_read_whole():
    body = multipart(("file", "a.jpg", b"x" * 1000))
    (upload,) = read(StreamedRequest(body, chunk=200, delay_s=0.02), receive_timeout_s=5.0)
    assert upload.data == b"x" * 1000


def raw(body: bytes, **kwargs) -> StreamedRequest:
    """The image itself as the body (``curl --data-binary``)."""
    return StreamedRequest(body, content_type="image/jpeg", **kwargs)


def test_a_raw_body_is_the_one_file_with_its_name_from_content_disposition():
    data = bytes(range(256)) * 20
    disposition = ((b"content-disposition", b'attachment; filename="plot 7.jpg"'),)
    (upload,) = read(raw(data, chunk=700, extra_headers=disposition), raw_body=True)
    assert (upload.filename, upload.data) == ("plot 7.jpg", data)
    (unnamed,) = read(raw(data), raw_body=True)
    assert unnamed.filename is None


def test_a_raw_body_is_refused_where_raw_bodies_are_not_taken():
    err = error_of(raw(b"x" * 100))  # the batch endpoint: multipart only
    assert (err.status, err.code) == (415, "unsupported_media_type")


def test_a_raw_body_over_the_limit_is_refused_before_or_while_it_streams():
    declared = raw(b"x" * 50_000, content_length=50_000)
    err = error_of(declared, max_bytes=10_000, raw_body=True)
    assert (err.status, err.code) == (413, "file_too_large")
    assert declared.pulled == 0, "not a single body chunk may be read"
    chunked = raw(b"x" * 500_000, chunk=1024)
    err = error_of(chunked, max_bytes=10_000, raw_body=True)
    assert (err.status, err.code) == (413, "file_too_large")
    assert chunked.pulled < 20, f"read {chunked.pulled} of {len(chunked.chunks)} chunks"


def test_a_raw_body_bigger_than_the_memory_budget_is_413_and_gives_its_charge_back():
    budget = MemoryBudget(5_000, wait_s=0.0)
    err = error_of(raw(b"x" * 8_000, chunk=1000), budget=budget, raw_body=True)
    assert err.status == 413
    assert budget.in_use == 0


def test_a_raw_body_trickling_past_the_receive_deadline_is_408():
    budget = MemoryBudget(1 << 30, wait_s=0.0)
    slow = raw(b"x" * 4000, chunk=100, delay_s=0.05)  # ~2 s for the whole body
    started = time.monotonic()
    err = error_of(slow, receive_timeout_s=0.5, budget=budget, raw_body=True)
    assert (err.status, err.code) == (408, "receive_timeout")
    assert time.monotonic() - started < 1.5
    assert budget.in_use == 0
