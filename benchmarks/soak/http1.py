"""A minimal HTTP/1.1 client on asyncio streams: the soak's default transport.

Why not httpx: measured on the 2-vCPU box against a server that answers every request after
1 s (uvloop, 180 kB bodies), httpx cost 11.8 ms of client CPU per request with one
AsyncClient and 512 requests in flight (its connection pool does work proportional to the
connections on every request), 1.3 ms when sharded over 64 clients; this client 0.09 ms. At
twice the service's capacity that is the difference between the client taking a quarter of
the box and taking nothing. ``--client httpx`` runs the same load through httpx to cross-check.

Scope: what our own server (uvicorn) sends: Content-Length or chunked bodies, keep-alive.
Loopback only; no TLS, proxies, redirects or cookies.
"""

from __future__ import annotations

import asyncio
import time

MAX_HEAD_BYTES = 64 * 1024
IDLE_REUSE_S = 2.0  # uvicorn closes idle keep-alive connections after 5 s; never reuse near that


class BadResponse(ValueError):
    """The server's answer is not HTTP/1.1 this client understands."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()

    def usable(self) -> bool:
        fresh = time.monotonic() - self.last_used < IDLE_REUSE_S
        return fresh and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


def parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status line and headers -> (status, lower-cased headers, keep-alive)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadResponse(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadResponse(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    keep_alive = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(parts[1]), headers, keep_alive


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, bool]:
    """(body, connection still usable)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks), True
            chunks.append((await reader.readexactly(size + 2))[:-2])
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"])), True
    return await reader.read(), False  # delimited by the server closing the connection


class Http1Pool:
    """Keep-alive connections to one host; as many as requests in flight (the caller bounds)."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"Host: {host}:{port}\r\n{extra}"
        self._free: list[_Connection] = []
        self.stale_retries = 0  # reused connections the server had closed: resent on a new one

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._free:
            conn = self._free.pop()
            if conn.usable():
                return conn, True
            conn.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        return _Connection(reader, writer), False

    async def post(
        self, path: str, body: bytes, content_type: str
    ) -> tuple[int, dict[str, str], bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        for attempt in range(2):
            conn, reused = await self._connection()
            try:
                conn.writer.write(head)
                conn.writer.write(body)
                raw_head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                nothing_read = not getattr(exc, "partial", b"")
                if reused and attempt == 0 and nothing_read:
                    self.stale_retries += 1  # closed while idle: the server never saw it
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            try:
                status, headers, keep_alive = parse_head(raw_head[:-4])
                data, reusable = await _read_body(conn.reader, headers)
            except BaseException:
                conn.close()
                raise
            if keep_alive and reusable:
                conn.last_used = time.monotonic()
                self._free.append(conn)
            else:
                conn.close()
            return status, headers, data
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        while self._free:
            self._free.pop().close()
