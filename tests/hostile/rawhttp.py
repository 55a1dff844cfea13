"""A tiny HTTP/1.1 client over a raw socket, for requests no well-behaved client would send.

httpx and friends fix up what an attacker (or a broken phone app) gets wrong: they add
``Content-Length``, refuse negative ones, quote boundaries, cap header sizes. Here the request
is bytes we build ourselves, the body can be streamed piece by piece (trickled, or endless until
the server answers), and the answer is parsed loosely enough to report whatever came back: a
JSON error, uvicorn's plain-text 400, or a connection closed or reset before any status line.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"  # every request in this package goes to the local test server only
SEND_SLICE = 256 * 1024  # large bodies go out in slices, so an early answer stops the upload


@dataclass(frozen=True)
class Request:
    """What to write on the socket: the head (request line + headers + blank line), then a body.

    ``stream`` (a factory, so a case can be sent more than once) yields the body in pieces with
    ``pause_s`` between them; sending stops as soon as the server answers or closes.
    ``expect_continue``: wait (up to 1 s) for ``100 Continue`` or a final answer before the body.
    """

    head: bytes
    body: bytes = b""
    stream: Callable[[], Iterable[bytes]] | None = None
    pause_s: float = 0.0
    expect_continue: bool = False
    label: str = ""

    def pieces(self) -> Iterator[bytes]:
        if self.stream is not None:
            yield from self.stream()
            return
        for start in range(0, len(self.body), SEND_SLICE):
            yield self.body[start : start + SEND_SLICE]


AUTO = "auto"  # content_length=AUTO: the true length of the body


def build(
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    content_length: str | None = AUTO,
    host: bool = True,
    **options,
) -> Request:
    """A request with the given headers in order; ``Content-Length`` as given (None: omitted)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host:
        lines.append(f"Host: {HOST}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if content_length == AUTO:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Request(head=head, body=body, label=f"{method} {path[:60]}", **options)


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``Transfer-Encoding: chunked`` framing of ``pieces``, with the closing zero chunk."""
    for piece in pieces:
        if piece:
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


@dataclass
class Response:
    """What came back. ``status`` is None when the connection ended before a status line."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""
    body_bytes_sent: int = 0
    transport_error: str | None = None  # e.g. "reset while sending", "timed out"
    elapsed_s: float = 0.0

    def json(self) -> object | None:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def error_code(self) -> str | None:
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return data["error"].get("code")
        return None

    @property
    def error_message(self) -> str:
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message", ""))
        return ""

    def summary(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return (
            f"status={self.status} code={self.error_code} sent={self.body_bytes_sent}B "
            f"transport_error={self.transport_error} in {self.elapsed_s:.2f}s body={text!r}"
        )


class _Reader:
    """Accumulates bytes from the socket and cuts one HTTP response out of them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False
        self.error: str | None = None

    def pull(self, wait_s: float) -> bool:
        """Read what is available within ``wait_s``; False when nothing more can come."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, wait_s))
        if not ready:
            return True
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError) as exc:
            self.closed, self.error = True, f"reset while reading ({exc.__class__.__name__})"
            return False
        except OSError as exc:
            self.closed, self.error = True, f"read failed ({exc})"
            return False
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def drop_interim(self) -> int:
        """Remove complete 1xx responses (e.g. ``100 Continue``) from the buffer's start."""
        dropped = 0
        while self.buffer.startswith(b"HTTP/1.1 1") or self.buffer.startswith(b"HTTP/1.0 1"):
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            self.buffer = self.buffer[end + 4 :]
            dropped += 1
        return dropped

    def final_response(self) -> tuple[int, dict[str, str], bytes, int] | None:
        """(status, headers, body, bytes used) once a complete non-1xx answer is buffered."""
        offset = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", offset)
            if end < 0:
                return None
            lines = self.buffer[offset:end].decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                return None
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if 100 <= status < 200:  # interim (100 Continue): skip it, the real one follows
                offset = start
                continue
            body = self._body(headers, start)
            if body is None:
                return None
            return status, headers, body[0], body[1]

    def _body(self, headers: dict[str, str], start: int) -> tuple[bytes, int] | None:
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                length = 0
            if len(self.buffer) - start >= length:
                return self.buffer[start : start + length], start + length
            return (self.buffer[start:], len(self.buffer)) if self.closed else None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, pos = b"", start
            while True:
                line_end = self.buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return (body, len(self.buffer)) if self.closed else None
                size = int(self.buffer[pos:line_end].split(b";")[0] or b"0", 16)
                if size == 0:
                    return body, line_end + 2
                if len(self.buffer) < line_end + 2 + size + 2:
                    return (body, len(self.buffer)) if self.closed else None
                body += self.buffer[line_end + 2 : line_end + 2 + size]
                pos = line_end + 2 + size + 2
        return (self.buffer[start:], len(self.buffer)) if self.closed else None


def exchange(port: int, request: Request, timeout: float = 10.0) -> Response:
    """Send ``request`` to 127.0.0.1:``port`` and return the answer (never raises on I/O)."""
    started = time.monotonic()
    deadline = started + timeout
    sent = 0
    transport_error = None
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as exc:
        return Response(None, transport_error=f"connect failed ({exc})")
    reader = _Reader(sock)
    try:
        try:
            sock.sendall(request.head)
            if request.expect_continue:
                # Wait (at most 1 s, as curl does) for "100 Continue" or the start of an answer.
                wait_until = min(deadline, time.monotonic() + 1.0)
                continued = False
                while time.monotonic() < wait_until and not continued and not reader.buffer:
                    if not reader.pull(wait_until - time.monotonic()):
                        break
                    continued = reader.drop_interim() > 0
            for piece in request.pieces():
                # Stop at the first sign of an answer: an early 413 means "don't send the rest".
                alive = reader.pull(0)
                reader.drop_interim()
                if not alive or reader.buffer:
                    break
                if time.monotonic() > deadline:
                    transport_error = "timed out while sending"
                    break
                sock.sendall(piece)
                sent += len(piece)
                if request.pause_s:
                    time.sleep(request.pause_s)
        except (BrokenPipeError, ConnectionResetError) as exc:
            transport_error = f"closed by the server while sending ({exc.__class__.__name__})"
        except TimeoutError:
            transport_error = "timed out while sending"
        while reader.final_response() is None and time.monotonic() < deadline:
            if not reader.pull(min(0.5, deadline - time.monotonic())):
                break
        if reader.final_response() is None and not reader.closed:
            transport_error = transport_error or "timed out waiting for the answer"
        return _finish(reader, sent, transport_error, started)
    finally:
        sock.close()


def _finish(reader: _Reader, sent: int, error: str | None, started: float) -> Response:
    elapsed = time.monotonic() - started
    parsed = reader.final_response()
    if parsed is None:
        return Response(
            None,
            raw=reader.buffer,
            body_bytes_sent=sent,
            transport_error=error or reader.error or "closed without an answer",
            elapsed_s=elapsed,
        )
    status, headers, body, _ = parsed
    return Response(status, headers, body, reader.buffer, sent, error or reader.error, elapsed)


def read_response(sock: socket.socket, timeout: float = 10.0) -> Response:
    """The next answer on a connection the caller writes to itself (a kept-alive one, say)."""
    started = time.monotonic()
    deadline = started + timeout
    reader = _Reader(sock)
    while reader.final_response() is None and time.monotonic() < deadline:
        if not reader.pull(min(0.5, deadline - time.monotonic())):
            break
    late = reader.final_response() is None and not reader.closed
    return _finish(reader, 0, "timed out waiting for the answer" if late else None, started)
