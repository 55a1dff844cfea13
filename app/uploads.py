"""Read image files out of a multipart request without ever holding more than the limits allow.

Starlette's form parser spools every file to a temporary file before the endpoint runs, and can
only cap the size of non-file fields. Here the body is streamed through python-multipart's parser
directly: a ``Content-Length`` over the limit is refused before a byte is read, and the bytes are
also counted as they arrive (chunked uploads have no length), so an oversized upload gets 413 as
soon as it crosses the limit. File data stays in memory: images are small and go straight to the
decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import ApiError

# Room for the multipart framing and part headers around each file.
PART_OVERHEAD_BYTES = 16 * 1024
MAX_FIELD_BYTES = 16 * 1024  # other (non-file) form fields are ignored but still bounded


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
    size: int = 0
    chunks: list[bytes] = field(default_factory=list)


def body_limit(max_files: int, max_file_bytes: int) -> int:
    """Largest request body that can carry ``max_files`` files of ``max_file_bytes`` each."""
    return max_files * (max_file_bytes + PART_OVERHEAD_BYTES) + PART_OVERHEAD_BYTES


async def read_uploads(
    request: Request, field_name: str, max_files: int, max_file_bytes: int
) -> list[Upload]:
    """The files sent as multipart field ``field_name``, in order.

    Raises :class:`ApiError`: 415 not multipart, 413 body/file too large or too many files,
    400 malformed body, 422 no file in ``field_name``.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the image(s) as multipart/form-data in field {field_name!r}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "multipart/form-data body without a boundary")

    limit = body_limit(max_files, max_file_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, "payload_too_large", f"request body of {declared} bytes is over {limit} bytes"
        )

    collector = _Collector(field_name, max_files, max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ApiError(413, "payload_too_large", f"request body is over {limit} bytes")
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ApiError(
            400, "invalid_multipart", "the multipart/form-data body is malformed"
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None
    if not collector.uploads:
        raise ApiError(422, "missing_file", f"no file in multipart field {field_name!r}")
    return collector.uploads


class _Collector:
    """python-multipart callbacks that keep the wanted files and enforce the limits."""

    def __init__(self, field_name: str, max_files: int, max_file_bytes: int) -> None:
        self.field_name = field_name
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.uploads: list[Upload] = []
        self._part = _Part()
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
        }

    def _on_part_begin(self) -> None:
        self._part = _Part()
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
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
            part.chunks.append(data[start:end])
        elif part.size > MAX_FIELD_BYTES:
            raise ApiError(413, "payload_too_large", f"form field {part.name!r} is too large")

    def _on_part_end(self) -> None:
        part = self._part
        if part.wanted:
            self.uploads.append(Upload(part.filename, b"".join(part.chunks)))
