"""The hostile corpus: unusual files and broken requests, each with the answer it must get.

Every :class:`Case` says what to send (bytes on a socket, see :mod:`tests.hostile.rawhttp`) and
which (status, error code) the service must answer, per its error contract. Multipart bodies are
built by hand here so that each case can break exactly one thing. Per-file kinds (see
:mod:`tests.hostile.files`) become two cases each: alone on ``/v1/predict``, and second in a
batch after a good photo (the good one must still be scored; the bad one gets its own status).

For reuse (e.g. by a benchmark): :func:`ordinary_photo`, :func:`expensive_files`,
:func:`hostile_files`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tests.hostile.files import (
    MAX_UPLOAD_BYTES,
    FileKind,
    Outcome,
    expensive_files,
    file_kinds,
    hostile_files,
    ordinary_photo,
)
from tests.hostile.rawhttp import Request, Response, build, chunked

__all__ = ["Case", "cases", "expensive_files", "hostile_files", "ordinary_photo"]

API_KEY = "hostile-corpus-key"  # the corpus server requires it; cases send it unless told not
BOUNDARY = "----hostile7MA4YWxkTrZu0gW"
NOT_JSON = "<not json>"  # a protocol-level answer from uvicorn/h11: only the status is checked
PREDICT, BATCH = "/v1/predict", "/v1/predict/batch"
MAX_BATCH_FILES = 32


@dataclass(frozen=True)
class Case:
    """One thing to send and the answer it must get: ``(expect_status, expect_code)``, or one of
    ``also``. ``expect_code`` is the JSON error code; None for a 200, ``NOT_JSON`` for answers
    that come from the HTTP layer before the application. ``verify`` checks the rest."""

    name: str
    description: str
    make_request: Callable[[], Request]
    expect_status: int
    expect_code: str | None
    also: tuple[Outcome, ...] = ()
    verify: Callable[[Response], str | None] | None = None
    timeout_s: float = 30.0

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return ((self.expect_status, self.expect_code), *self.also)

    def check(self, response: Response) -> str | None:
        """None when ``response`` is an allowed answer, else what is wrong with it."""
        if response.status is None:
            return f"no HTTP answer ({response.transport_error})"
        if response.status >= 500 and response.status != 503:
            return f"server error: {response.summary()}"
        if response.status == 503 and "retry-after" not in response.headers:
            return f"503 without Retry-After: {response.summary()}"
        if not any(outcome_matches(response, outcome) for outcome in self.outcomes):
            return f"expected one of {list(self.outcomes)}, got {response.summary()}"
        return self.verify(response) if self.verify else None


def outcome_matches(response: Response, outcome: Outcome) -> bool:
    status, code = outcome
    if response.status != status:
        return False
    if code == NOT_JSON:
        return True
    data = response.json()
    if code is None:
        return isinstance(data, dict) and "error" not in data
    return response.error_code == code and bool(response.error_message)


# -- multipart by hand ----------------------------------------------------------------------


def part(
    data: bytes,
    name: str = "file",
    filename: str | None = "photo.jpg",
    content_type: str | None = "image/jpeg",
    *,
    disposition: str | None = None,
    extra_headers: Sequence[str] = (),
) -> bytes:
    """One part: its header lines, a blank line, its data. ``disposition=""`` omits it."""
    if disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
    lines = [f"Content-Disposition: {disposition}"] if disposition else []
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + data


def multipart(
    parts: Sequence[bytes],
    boundary: str = BOUNDARY,
    *,
    closed: bool = True,
    preamble: bytes = b"",
    epilogue: bytes = b"",
) -> bytes:
    delimiter = b"--" + boundary.encode("latin-1")
    body = preamble + b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (delimiter + b"--\r\n" + epilogue if closed else b"")


def post(
    path: str,
    body: bytes,
    *,
    content_type: str | None = f"multipart/form-data; boundary={BOUNDARY}",
    key: str | None = API_KEY,
    headers: Sequence[tuple[str, str]] = (),
    **options,
) -> Request:
    all_headers = [("X-API-Key", key)] if key is not None else []
    if content_type is not None:
        all_headers.append(("Content-Type", content_type))
    all_headers.extend(headers)
    return build("POST", path, all_headers, body, **options)


def upload(path: str, *parts_: bytes, **options) -> Request:
    return post(path, multipart(parts_), **options)


def good_part(seed: int = 11, name: str = "file", filename: str = "good.jpg") -> bytes:
    return part(ordinary_photo(seed), name=name, filename=filename)


# -- checks beyond status and code ----------------------------------------------------------


def mentions(*words: str) -> Callable[[Response], str | None]:
    """The error message names each of ``words`` (as whole words)."""

    def verify(response: Response) -> str | None:
        message = response.error_message
        missing = [w for w in words if not re.search(rf"\b{re.escape(w)}\b", message)]
        return f"message {message!r} does not name {missing}" if missing else None

    return verify


def is_prediction(response: Response) -> str | None:
    """A 200 carries a prediction (other allowed answers are checked by status and code)."""
    if response.status != 200:
        return None
    data = response.json()
    probability = data.get("probability") if isinstance(data, dict) else None
    if not isinstance(probability, int | float) or not 0.0 <= probability <= 1.0:
        return f"not a prediction: {response.body[:200]!r}"
    return None


def batch_of(
    count: int,
    items: dict[int, tuple[Outcome, ...]] | None = None,
    filenames: dict[int, str] | None = None,
) -> Callable[[Response], str | None]:
    """A batch answer with ``count`` results; item i's (status, code) is one of ``items[i]``
    (default: a prediction), and its filename is echoed as ``filenames[i]``."""
    items, filenames = items or {}, filenames or {}

    def verify(response: Response) -> str | None:
        data = response.json()
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != count or data.get("count") != count:
            return f"expected {count} results, got {response.body[:300]!r}"
        for index, result in enumerate(results):
            allowed = items.get(index, ((200, None),))
            error = result.get("error") or {}
            got = (result.get("status"), error.get("code"))
            if got not in allowed:
                return f"item {index}: expected one of {list(allowed)}, got {result}"
            if got[0] == 200 and not isinstance(result.get("prediction"), dict):
                return f"item {index} says 200 without a prediction: {result}"
            if index in filenames and result.get("filename") != filenames[index]:
                return f"item {index}: filename {result.get('filename')!r}"
        succeeded = sum(r.get("status") == 200 for r in results)
        if data.get("succeeded") != succeeded:
            return f"succeeded={data.get('succeeded')} but {succeeded} items are 200"
        return None

    return verify


def sent_at_most(limit: int) -> Callable[[Response], str | None]:
    """The server answered before the client had sent more than ``limit`` body bytes."""

    def verify(response: Response) -> str | None:
        if response.body_bytes_sent > limit:
            return f"answered only after {response.body_bytes_sent} body bytes (> {limit})"
        return None

    return verify


# -- the cases ------------------------------------------------------------------------------


def file_cases(kind: FileKind) -> list[Case]:
    """``kind`` alone on /v1/predict, and second in a batch after a good photo."""

    def alone() -> Request:
        return upload(PREDICT, part(kind.data(), "file", kind.filename, kind.content_type))

    def in_batch() -> Request:
        return upload(
            BATCH,
            good_part(name="files"),
            part(kind.data(), "files", kind.filename, kind.content_type),
        )

    slow = 90.0 if len(kind.outcomes) > 1 else 30.0
    single = Case(
        f"file-{kind.name}",
        f"/v1/predict: {kind.description}",
        alone,
        *kind.expect,
        also=kind.also,
        verify=is_prediction if kind.expect == (200, None) else None,
        timeout_s=slow,
    )
    if kind.expect == (413, "file_too_large"):  # a size limit: the whole request's status
        batch = Case(
            f"batch-{kind.name}",
            f"batch: {kind.description}",
            in_batch,
            413,
            "file_too_large",
            timeout_s=slow,
        )
    else:
        batch = Case(
            f"batch-{kind.name}",
            f"batch, after a good photo: {kind.description}",
            in_batch,
            200,
            None,
            verify=batch_of(2, {1: kind.outcomes}, {0: "good.jpg", 1: kind.filename}),
            timeout_s=slow,
        )
    return [single, batch]


def _header_flood() -> Iterator[bytes]:
    """64 MB of one header's value, then the end of the head: stopped early by any answer."""
    piece = b"a" * 65536
    for _ in range(1024):
        yield piece
    yield b"\r\n\r\n"


def _endless_file() -> Iterator[bytes]:
    head = multipart([part(b"", "file")], closed=False)[:-2]  # the part, before its data ends
    yield from chunked(_file_then_garbage(head))


def _file_then_garbage(head: bytes) -> Iterator[bytes]:
    yield head + b"\xff\xd8\xff\xe0"
    for _ in range(64):  # 64 MiB: three times the per-file limit
        yield b"\x00" * (1 << 20)


def _trickle() -> Iterator[bytes]:
    body = multipart([good_part(seed=12)])
    step = max(1, len(body) // 40)
    for start in range(0, len(body), step):
        yield body[start : start + step]


def request_cases() -> list[Case]:
    """Broken and unusual requests (fields, counts, multipart framing, HTTP itself)."""
    photo = ordinary_photo(13)
    good = part(photo)
    body = multipart([good])
    mp = f"multipart/form-data; boundary={BOUNDARY}"
    invalid = (400, "invalid_multipart")
    long_boundary = "b" * 300
    cases = [
        Case(
            "predict-wrong-field-image",
            "field `image` instead of `file`",
            lambda: upload(PREDICT, part(photo, "image")),
            422,
            "missing_file",
            verify=mentions("file", "image"),
        ),
        Case(
            "batch-wrong-field-file",
            "field `file` on the batch endpoint",
            lambda: upload(BATCH, part(photo, "file")),
            422,
            "missing_file",
            verify=mentions("files", "file"),
        ),
        Case(
            "part-without-disposition",
            "a part with no Content-Disposition",
            lambda: upload(PREDICT, part(photo, disposition="")),
            422,
            "missing_file",
            verify=mentions("file"),
        ),
        Case(
            "file-without-filename",
            "the file part has a name but no filename (some HTTP "
            "libraries); accepting it is friendlier, missing_file is defensible",
            lambda: upload(PREDICT, part(photo, filename=None)),
            200,
            None,
            also=((422, "missing_file"),),
        ),
        Case(
            "predict-two-files",
            "two `file` parts on /v1/predict",
            lambda: upload(PREDICT, good, good),
            413,
            "too_many_files",
        ),
        Case(
            "batch-33-files",
            "33 files, one over the batch limit",
            lambda: upload(BATCH, *[good_part(i, "files") for i in range(33)]),
            413,
            "too_many_files",
        ),
        Case(
            "batch-32-files",
            "exactly the batch limit of 32 files",
            lambda: upload(BATCH, *[good_part(i, "files") for i in range(32)]),
            200,
            None,
            verify=batch_of(32),
            timeout_s=60,
        ),
        Case(
            "parts-500-tiny",
            "a good file then 500 one-byte form fields",
            lambda: upload(PREDICT, good, *[part(b"x", "note", None, None)] * 500),
            413,
            "too_many_parts",
        ),
        Case(
            "boundary-300-chars",
            "a 300-character boundary (RFC 2046: at most 70)",
            lambda: post(
                PREDICT,
                multipart([good], long_boundary),
                content_type=f"multipart/form-data; boundary={long_boundary}",
            ),
            *invalid,
        ),
        Case(
            "boundary-missing",
            "multipart/form-data without a boundary parameter",
            lambda: post(PREDICT, body, content_type="multipart/form-data"),
            *invalid,
        ),
        Case(
            "boundary-mismatch",
            "the body uses another boundary than the header",
            lambda: post(PREDICT, multipart([good], "other-boundary")),
            *invalid,
        ),
        Case(
            "body-truncated-mid-file",
            "the body stops halfway through the file",
            lambda: post(PREDICT, body[: len(body) // 2]),
            *invalid,
        ),
        Case(
            "body-without-closing-boundary",
            "every part complete, no closing delimiter",
            lambda: post(PREDICT, multipart([good], closed=False)),
            *invalid,
        ),
        Case(
            "body-empty",
            "multipart content type, zero-byte body",
            lambda: post(PREDICT, b""),
            *invalid,
        ),
        Case(
            "body-closing-boundary-only",
            "a closing delimiter and no parts",
            lambda: post(PREDICT, f"--{BOUNDARY}--\r\n".encode()),
            422,
            "missing_file",
            also=(invalid,),
        ),
        Case(
            "part-header-20kib",
            "a part header line of 20 KiB",
            lambda: upload(PREDICT, part(photo, extra_headers=["X-Pad: " + "p" * 20480])),
            *invalid,
        ),
        Case(
            "lf-line-endings",
            "multipart framed with bare LF instead of CRLF",
            lambda: post(PREDICT, multipart([good]).replace(b"\r\n", b"\n")),
            *invalid,
        ),
        Case(
            "garbage-body",
            "64 KB of noise declared as multipart",
            lambda: post(PREDICT, bytes(range(256)) * 256),
            *invalid,
        ),
        Case(
            "no-content-type",
            "a multipart body without Content-Type",
            lambda: post(PREDICT, body, content_type=None),
            415,
            "unsupported_media_type",
        ),
        Case(
            "json-body",
            "JSON with a base64 image",
            lambda: post(
                PREDICT, json.dumps({"file": photo.hex()}).encode(), content_type="application/json"
            ),
            415,
            "unsupported_media_type",
        ),
        Case(
            "urlencoded-body",
            "a form, not multipart",
            lambda: post(
                PREDICT, b"file=photo.jpg", content_type="application/x-www-form-urlencoded"
            ),
            415,
            "unsupported_media_type",
        ),
        Case(
            "raw-jpeg-body",
            "the JPEG as the whole body (Content-Type: image/jpeg): taken, as curl --data-binary",
            lambda: post(PREDICT, photo, content_type="image/jpeg"),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "raw-truncated-jpeg-body",
            "the first half of a JPEG as the whole body",
            lambda: post(PREDICT, photo[: len(photo) // 2], content_type="image/jpeg"),
            422,
            "corrupt_image",
        ),
        Case(
            "raw-noise-body",
            "64 KB of noise as the body, declared image/jpeg",
            lambda: post(PREDICT, bytes(range(256)) * 256, content_type="image/jpeg"),
            415,
            "unsupported_media_type",
        ),
        Case(
            "raw-empty-body",
            "an empty body declared image/jpeg",
            lambda: post(PREDICT, b"", content_type="image/jpeg"),
            422,
            "missing_file",
            verify=mentions("body", "file"),
        ),
        Case(
            "raw-body-to-batch",
            "the JPEG as the whole body of a batch request: multipart only there",
            lambda: post(BATCH, photo, content_type="image/jpeg"),
            415,
            "unsupported_media_type",
            verify=mentions("files"),
        ),
        Case(
            "gzip-encoded-body",
            "a gzip-compressed multipart body (Content-Encoding: gzip); never inflated: 400 or 415",
            lambda: post(PREDICT, gzip.compress(body), headers=[("Content-Encoding", "gzip")]),
            *invalid,
            also=((415, "unsupported_media_type"),),
        ),
        Case(
            "content-length-over-limit",
            "Content-Length: 200 MB, no body sent",
            lambda: post(PREDICT, b"", content_length="200000000"),
            413,
            "payload_too_large",
            verify=sent_at_most(0),
        ),
        Case(
            "expect-continue-over-limit",
            "curl-style Expect: 100-continue with 2 GB declared",
            lambda: post(
                BATCH,
                b"",
                content_length=str(2 << 30),
                expect_continue=True,
                headers=[("Expect", "100-continue")],
            ),
            413,
            "payload_too_large",
            verify=sent_at_most(0),
        ),
        Case(
            "expect-continue-ok",
            "a normal upload with Expect: 100-continue (curl > 1 KB)",
            lambda: post(PREDICT, body, expect_continue=True, headers=[("Expect", "100-continue")]),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "chunked-ok",
            "a valid upload with Transfer-Encoding: chunked (streaming apps)",
            lambda: post(
                PREDICT,
                b"",
                content_length=None,
                stream=lambda: chunked([body[i : i + 4096] for i in range(0, len(body), 4096)]),
                headers=[("Transfer-Encoding", "chunked")],
            ),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "chunked-over-limit",
            "a chunked file that never ends (64 MiB offered; answered well before the end: "
            "loopback socket buffers hold ~10 MB in flight)",
            lambda: post(
                PREDICT,
                b"",
                content_length=None,
                stream=_endless_file,
                headers=[("Transfer-Encoding", "chunked")],
            ),
            413,
            "payload_too_large",
            also=((413, "file_too_large"),),
            verify=sent_at_most(MAX_UPLOAD_BYTES + (16 << 20)),
        ),
        Case(
            "slow-trickle",
            "a valid upload trickled in 40 pieces over ~3 s",
            lambda: post(
                PREDICT,
                b"",
                stream=_trickle,
                pause_s=0.075,
                content_length=str(len(multipart([good_part(seed=12)]))),
            ),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "header-64kib",
            "one 64 KiB header on /health/live, written at once",
            lambda: build("GET", "/health/live", [("X-Pad", "h" * 65536)]),
            431,
            "headers_too_large",
            also=((400, NOT_JSON),),  # h11's own limit when the head arrives in several reads
        ),
        Case(
            "header-64kib-in-pieces",
            "the same 64 KiB header arriving in 4 KiB pieces (a slow client)",
            lambda: Request(
                head=b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ",
                stream=lambda: [b"h" * 4096] * 16 + [b"\r\n\r\n"],
                pause_s=0.01,
            ),
            400,
            NOT_JSON,
        ),
        Case(
            "header-64mb-streamed",
            "a 64 MB header, streamed until the server answers",
            lambda: Request(
                head=b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ",
                stream=_header_flood,
            ),
            400,
            NOT_JSON,
            verify=sent_at_most(8 << 20),
        ),
        Case(
            "url-64kib",
            "a 64 KiB request target",
            lambda: build("GET", "/" + "u" * 65536),
            414,
            "uri_too_long",
            also=((400, NOT_JSON),),  # h11's own limit when the head arrives in several reads
        ),
        Case(
            "headers-200",
            "200 request headers",
            lambda: build(
                "GET",
                "/v1/model",
                [("X-API-Key", API_KEY)] + [(f"X-H{i}", "v") for i in range(200)],
            ),
            431,
            "too_many_headers",
        ),
        Case(
            "missing-api-key",
            "no X-API-Key",
            lambda: upload(PREDICT, good, key=None),
            401,
            "unauthorized",
        ),
        Case(
            "wrong-api-key",
            "a wrong X-API-Key",
            lambda: upload(PREDICT, good, key="guess"),
            401,
            "unauthorized",
        ),
        Case(
            "unknown-path",
            "GET /v1/nothing-here",
            lambda: build("GET", "/v1/nothing-here", [("X-API-Key", API_KEY)]),
            404,
            "not_found",
        ),
        Case(
            "get-on-predict",
            "GET /v1/predict",
            lambda: build("GET", PREDICT, [("X-API-Key", API_KEY)]),
            405,
            "method_not_allowed",
        ),
        Case(
            "absurd-content-length",
            "Content-Length: 99999999999999999999 (no body)",
            lambda: post(PREDICT, b"", content_length="99999999999999999999"),
            413,
            "payload_too_large",
            also=((400, NOT_JSON),),
            verify=sent_at_most(0),
        ),
        Case(
            "negative-content-length",
            "Content-Length: -1",
            lambda: post(PREDICT, b"", content_length="-1"),
            400,
            NOT_JSON,
        ),
        Case(
            "conflicting-content-lengths",
            "two different Content-Length headers (request smuggling)",
            lambda: post(PREDICT, body, headers=[("Content-Length", str(len(body) + 10))]),
            400,
            NOT_JSON,
        ),
        Case(
            "quoted-boundary-epilogue",
            "boundary in quotes, text after the closing delimiter (both allowed by RFC 2046)",
            lambda: post(
                PREDICT,
                multipart([good], epilogue=b"bye\r\n"),
                content_type=f'multipart/form-data; boundary="{BOUNDARY}"',
            ),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "preamble",
            "text before the first delimiter: allowed by RFC 2046 but sent by no real client, "
            "so a clean 400 is as good as a prediction",
            lambda: post(PREDICT, multipart([good], preamble=b"preamble\r\n")),
            200,
            None,
            also=(invalid,),
        ),
        Case(
            "mixed-case-content-type",
            "Multipart/Form-Data with a charset parameter",
            lambda: post(
                PREDICT,
                body,
                content_type=f"Multipart/Form-Data; charset=utf-8; boundary={BOUNDARY}",
            ),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "extra-field-before-file",
            "a text field before the file",
            lambda: upload(PREDICT, part(b"plot 17", "note", None, None), good),
            200,
            None,
            verify=is_prediction,
        ),
        Case(
            "odd-filenames",
            "batch: path traversal, unicode + emoji, a NUL byte and 2 KB "
            "file names, each echoed back",
            lambda: upload(
                BATCH, *[good_part(30 + i, "files", n) for i, n in enumerate(ODD_NAMES)]
            ),
            200,
            None,
            verify=batch_of(len(ODD_NAMES), filenames=dict(enumerate(ODD_NAMES))),
        ),
        Case(
            "http-1.0",
            "HTTP/1.0 request with Content-Length",
            lambda: Request(
                head=(
                    f"POST {PREDICT} HTTP/1.0\r\nX-API-Key: {API_KEY}\r\nContent-Type: {mp}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode(),
                body=body,
            ),
            200,
            None,
            verify=is_prediction,
        ),
    ]
    return cases


ODD_NAMES = ("../../etc/passwd", "çà_été_🌿.HEIC.jpg", "a\x00b.jpg", "n" * 2048 + ".jpg")


def cases() -> list[Case]:
    """Every case: the request-level ones, then two per file kind."""
    out = request_cases()
    for kind in file_kinds():
        out.extend(file_cases(kind))
    names = [c.name for c in out]
    assert len(names) == len(set(names)), "case names must be unique"
    return out
