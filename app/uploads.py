"""Read image files out of a request without ever holding more than the limits allow.

Starlette's form parser spools every file to a temporary file before the endpoint runs, and can
only cap the size of non-file fields. Here the body is streamed through python-multipart's parser
directly: a ``Content-Length`` over the limit is refused before a byte is read, and the bytes are
also counted as they arrive (chunked uploads have no length), so an oversized upload gets 413 as
soon as it crosses the limit. File data stays in memory: images are small and go straight to the
decoder.

Every byte kept (the wanted files' data) is charged to the request's share of the memory budget
as it arrives (:mod:`app.admission`); other parts are dropped as they pass, counted only
towards the body limit. The multipart structure itself is bounded: boundary length, bytes of
each part's headers, number of parts. A file sent under another field name is not stored; it
makes the answer say which field to use.

``POST /v1/predict`` also takes the image itself as the body (``Content-Type: image/*`` or
``application/octet-stream``, as ``curl --data-binary`` and many phone HTTP clients send it):
the same limits, deadlines and charging, with no multipart framing to parse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.admission import Charge
from app.errors import ApiError, unavailable

# Room for the multipart framing and part headers around each file.
PART_OVERHEAD_BYTES = 16 * 1024
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1
MAX_PART_HEADER_BYTES = 8 * 1024  # all header lines of one part together
MAX_PART_HEADERS = 16  # header lines of one part (a browser sends 2: disposition and type)
EXTRA_PARTS = 16  # parts allowed beyond the files: other form fields a client may add


class UploadsInFlight:
    """The receive deadlines of the uploads under way, so a shutdown can end them at once.

    uvicorn gives requests in flight a fixed time to finish once the port is closed, then
    cancels them with a plain-text 500. An upload may take ``INVASIVE_RECEIVE_TIMEOUT_S``
    (120 s) and then still be decoded and scored: it would be cut. So when the port closes,
    every upload still arriving is answered 503 ``shutting_down`` (Retry-After: another replica
    takes it), and the requests whose bodies are in finish within their request timeout.
    """

    def __init__(self) -> None:
        self.closing = False
        self._deadlines: set[asyncio.Timeout] = set()

    @contextlib.asynccontextmanager
    async def deadline(
        self, seconds: float, idle_s: float | None = None
    ) -> AsyncIterator[Callable[[], None]]:
        """A deadline ``seconds`` away for the whole upload and, with ``idle_s``, ``idle_s``
        after the last sign of life: call the callable given on each chunk received."""
        if self.closing:
            raise _shutting_down()
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        def next_at() -> float:
            return end if idle_s is None else min(end, loop.time() + idle_s)

        async with asyncio.timeout_at(next_at()) as timeout:

            def alive() -> None:
                if not self.closing:
                    timeout.reschedule(next_at())

            self._deadlines.add(timeout)
            try:
                yield alive
            finally:
                self._deadlines.discard(timeout)

    def end_all(self) -> None:
        """Every upload still arriving times out now, and answers 503 ``shutting_down``."""
        self.closing = True
        now = asyncio.get_running_loop().time()
        for timeout in self._deadlines:
            timeout.reschedule(now)


def _shutting_down() -> ApiError:
    return unavailable(
        "shutting_down", "the service is shutting down while the upload arrived; retry"
    )


@dataclass
class Upload:
    """One uploaded file: its name as the client sent it, and its bytes."""

    filename: str | None
    data: bytes


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    wanted: bool = False
    has_disposition: bool = False
    size: int = 0
    # One growing buffer, not a list of pieces joined at the end: a batch of large files would
    # otherwise hold every file twice (pieces + joined copy), beyond what the budget counts.
    buffer: bytearray = field(default_factory=bytearray)


def _body_over(declared: str | None, limit: int) -> str:
    size = f"of {declared} bytes " if declared else ""
    return (
        f"the request body {size}is over its limit of {limit} bytes: "
        "INVASIVE_MAX_UPLOAD_BYTES per file (INVASIVE_MAX_BATCH_FILES files in a batch) plus "
        "room for the multipart framing"
    )


def _is_raw_image(content_type: bytes) -> bool:
    return content_type.startswith(b"image/") or content_type == b"application/octet-stream"


def _how_to_send(field_name: str, raw_body: bool) -> str:
    multipart = f"send the image(s) as multipart/form-data in field {field_name!r}"
    if not raw_body:
        return multipart
    return (f"{multipart}, or the image itself as the body with Content-Type image/jpeg (any "
            "image/* or application/octet-stream)")


def body_limit(max_files: int, max_file_bytes: int) -> int:
    """Largest request body that can carry ``max_files`` files of ``max_file_bytes`` each."""
    return max_files * (max_file_bytes + PART_OVERHEAD_BYTES) + PART_OVERHEAD_BYTES


async def read_uploads(
    request: Request,
    field_name: str,
    max_files: int,
    max_file_bytes: int,
    charge: Charge,
    receive_timeout_s: float,
    in_flight: UploadsInFlight | None = None,
    receive_idle_s: float | None = None,
    raw_body: bool = False,
) -> list[Upload]:
    """The files sent as multipart field ``field_name``, in order.

    ``raw_body``: a body that is an image itself (``Content-Type: image/*`` or
    ``application/octet-stream``) is also taken, as the one file (``max_files`` must be 1).

    Raises :class:`ApiError`: 415 neither; 413 body/file too large, too many files or
    parts; 400 malformed body; 408 body not received within ``receive_timeout_s`` (or nothing of
    it for ``receive_idle_s``); 422 no file
    in ``field_name`` (an empty body); 503 memory budget busy, or shutting down
    (``in_flight.end_all()``).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    in_flight = in_flight or UploadsInFlight()
    if raw_body and _is_raw_image(content_type):
        assert max_files == 1, "a raw body carries one file"
        return [await _read_raw(request, field_name, max_file_bytes, charge, receive_timeout_s,
                                in_flight, receive_idle_s)]
    if content_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type", _how_to_send(field_name, raw_body))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "multipart/form-data body without a boundary")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise ApiError(
            400,
            "invalid_multipart",
            f"the multipart boundary is {len(boundary)} characters long, over the "
            f"{MAX_BOUNDARY_LENGTH} that RFC 2046 allows",
        )

    limit = body_limit(max_files, max_file_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", _body_over(declared, limit))

    collector = _Collector(field_name, max_files, max_file_bytes)
    charged = 0

    async def take(chunk: bytes, received: int) -> None:
        nonlocal charged
        if received > limit:
            raise ApiError(413, "payload_too_large", _body_over(None, limit))
        parser.write(chunk)
        # Only what is kept is charged: the wanted files' bytes. Other parts are dropped as
        # they pass (a stalled 380 MB text field held the whole budget).
        await charge.add(collector.kept - charged)
        charged = collector.kept

    try:
        # python-multipart has limits of its own (one header line 4,224 bytes, 8 per part) that
        # end in a bare "malformed"; set well past ours, so ours answer with their reason (it
        # checks a line's length before handing it over, so not just one byte past).
        parser = MultipartParser(
            boundary,
            collector.callbacks(),
            max_header_size=8 * MAX_PART_HEADER_BYTES,
            max_header_count=MAX_PART_HEADERS + 1,
        )
        await _receive_body(request, take, receive_timeout_s, in_flight, receive_idle_s)
        parser.finalize()
    except FormParserError:
        raise ApiError(
            400, "invalid_multipart", "the multipart/form-data body is malformed"
        ) from None
    if not collector.finished:
        raise ApiError(
            400, "invalid_multipart", "the multipart/form-data body ends before its last boundary"
        )
    if not collector.uploads:
        raise ApiError(422, "missing_file", collector.missing_file_message())
    return collector.uploads


async def _read_raw(
    request: Request,
    field_name: str,
    max_file_bytes: int,
    charge: Charge,
    receive_timeout_s: float,
    in_flight: UploadsInFlight,
    receive_idle_s: float | None,
) -> Upload:
    """The body itself as the one file; its name from ``Content-Disposition``, if sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_file_bytes:
        raise ApiError(413, "file_too_large", _raw_over(declared, max_file_bytes))
    data = bytearray()

    async def take(chunk: bytes, received: int) -> None:
        if received > max_file_bytes:
            raise ApiError(413, "file_too_large", _raw_over(None, max_file_bytes))
        data.extend(chunk)
        await charge.add(len(chunk))

    await _receive_body(request, take, receive_timeout_s, in_flight, receive_idle_s)
    if not data:
        raise ApiError(
            422,
            "missing_file",
            f"the request body is empty: send the image as the body (curl --data-binary "
            f"@photo.jpg -H 'Content-Type: image/jpeg' ...) or as multipart field "
            f"{field_name!r} (curl -F {field_name}=@photo.jpg ...)",
        )
    _, options = parse_options_header(request.headers.get("content-disposition", ""))
    filename = options.get(b"filename")
    return Upload(filename.decode("utf-8", "replace") if filename else None, bytes(data))


def _raw_over(declared: str | None, limit: int) -> str:
    size = f"of {declared} bytes " if declared else ""
    return f"the image {size}is over the limit of {limit} bytes (INVASIVE_MAX_UPLOAD_BYTES)"


async def _receive_body(
    request: Request,
    take: Callable[[bytes, int], Awaitable[None]],
    receive_timeout_s: float,
    in_flight: UploadsInFlight,
    receive_idle_s: float | None,
) -> None:
    """Hand each chunk of the body to ``take`` (with the bytes received so far) in time.

    The whole body within one deadline: without it a client sending a byte now and then holds
    its connection, and what it sent stays charged to the memory budget, forever. And no long
    silence within it: a stalled client gives back what it holds in ``receive_idle_s``, not
    only at the end of the whole upload's time.
    """
    received = 0
    started = asyncio.get_running_loop().time()
    try:
        async with in_flight.deadline(receive_timeout_s, receive_idle_s) as alive:
            async for chunk in request.stream():
                alive()
                received += len(chunk)
                await take(chunk, received)
    except TimeoutError:
        if in_flight.closing:
            raise _shutting_down() from None
        if receive_idle_s is not None and (
            asyncio.get_running_loop().time() - started < receive_timeout_s - 0.01
        ):
            raise ApiError(
                408,
                "receive_timeout",
                f"no bytes of the upload arrived for {receive_idle_s:g} s "
                f"(INVASIVE_RECEIVE_IDLE_S); {received} bytes arrived",
            ) from None
        raise ApiError(
            408,
            "receive_timeout",
            f"the upload took over {receive_timeout_s:g} s (INVASIVE_RECEIVE_TIMEOUT_S); "
            f"{received} bytes arrived",
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None


class _Collector:
    """python-multipart callbacks that keep the wanted files and enforce the limits."""

    def __init__(self, field_name: str, max_files: int, max_file_bytes: int) -> None:
        self.field_name = field_name
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.uploads: list[Upload] = []
        self.stray_fields: list[str] = []  # parts with data under another name (or none)
        self.parts = 0
        self.kept = 0  # bytes of wanted files held so far
        self.finished = False
        self._part = _Part()
        self._header_bytes = 0
        self._headers = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def missing_file_message(self) -> str:
        """Which field to use, and where the data went instead (e.g. ``image``)."""
        missing = f"no file in multipart field {self.field_name!r}"
        use = f"send the photo as multipart field {self.field_name!r}"
        example = f"(curl -F {self.field_name}=@photo.jpg ...)"
        if not self.stray_fields:
            return f"{missing}: {use} {example}"
        names = ", ".join(
            repr(name) if name else "a part without a Content-Disposition name"
            for name in dict.fromkeys(self.stray_fields)
        )
        return f"{missing}, but data came in {names}: {use} {example}"

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_files + EXTRA_PARTS:
            raise ApiError(
                413,
                "too_many_parts",
                f"the body has more than {self.max_files + EXTRA_PARTS} multipart parts",
            )
        self._part = _Part()
        self._disposition = b""
        self._header_bytes = 0
        self._headers = 0

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(
                400,
                "invalid_multipart",
                f"a multipart part's headers are over {MAX_PART_HEADER_BYTES} bytes",
            )

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers += 1
        if self._headers > MAX_PART_HEADERS:
            raise ApiError(
                400,
                "invalid_multipart",
                f"a multipart part has more than {MAX_PART_HEADERS} header lines",
            )
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
            self._part.has_disposition = True
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        part = self._part
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")
        part.wanted = part.name == self.field_name
        if part.wanted and len(self.uploads) >= self.max_files:
            raise ApiError(413, "too_many_files", f"at most {self.max_files} file(s) per request")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.size += end - start
        if part.wanted:
            if part.size > self.max_file_bytes:
                raise ApiError(
                    413,
                    "file_too_large",
                    f"file {part.filename or part.name!r} is over the limit of "
                    f"{self.max_file_bytes} bytes",
                )
            part.buffer += memoryview(data)[start:end]
            self.kept += end - start
        # Other parts are not kept: their bytes only count towards the body limit.

    def _on_part_end(self) -> None:
        part = self._part
        if part.wanted:
            self.uploads.append(Upload(part.filename, bytes(part.buffer)))
            part.buffer = bytearray()  # the copy above is the one kept
        elif part.size or part.filename is not None or not part.has_disposition:
            self.stray_fields.append(part.name)

    def _on_end(self) -> None:
        self.finished = True
