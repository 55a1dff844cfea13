"""Build multipart/form-data bodies once, before the run, so the client only replays bytes."""

from __future__ import annotations

import mimetypes

# Fixed so every pre-built body shares one Content-Type header (wrk sets headers once per run).
BOUNDARY = "invasive-bench-5f1d3c9a8e7b"


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def multipart_body(
    field: str, filename: str, data: bytes, boundary: str = BOUNDARY, mime: str | None = None
) -> bytes:
    """One file part named ``field``: the body a browser or ``curl -F field=@file`` sends."""
    if boundary.encode() in data:
        # Vanishingly unlikely for JPEG bytes, but a body that contains its own boundary is corrupt.
        raise ValueError(f"boundary {boundary!r} occurs inside {filename!r}; pick another")
    mime = mime or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()
