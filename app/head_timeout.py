"""uvicorn's h11 protocol with a deadline for each request head.

uvicorn times nothing before a request's head is complete: a client that connects and sends
nothing, or sends a head a few bytes at a time (staying under ``INVASIVE_MAX_HEADER_BYTES``),
holds its connection and a file descriptor for as long as it likes, so a few thousand such
clients take every descriptor the process has (slowloris). Behind the compose proxy HAProxy's
``timeout http-request`` guards against this; ``make serve`` and a bare container face clients
directly. Here every connection must deliver a complete request head within
``INVASIVE_HEADER_TIMEOUT_S`` of connecting, and again of its previous response on a kept-alive
connection; otherwise it is closed: with 408 ``header_timeout`` if part of a head came, silently
if nothing did (as nginx does: a browser's unused preconnection must not read an answer to a
request it never sent). The body has its own deadline (``INVASIVE_RECEIVE_TIMEOUT_S``,
app/uploads.py).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

from app.errors import error_body


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        error_body(
            "header_timeout",
            f"the request head did not arrive within {seconds:g} s (INVASIVE_HEADER_TIMEOUT_S)",
        )
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HeadTimeoutH11Protocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request head is late (408)."""

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # bytes arrived since the deadline was set
        self._await_head()

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_started = False
        # A new head replaces ``self.cycle``; if it is still this one at the deadline, the head
        # never completed.
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late, self.cycle)

    def _head_late(self, cycle_then: object) -> None:
        self._head_timer = None
        if self.cycle is not cycle_then or self.transport.is_closing():
            return
        if cycle_then is not None and not cycle_then.response_complete:  # type: ignore[attr-defined]
            return  # a response is still being sent (cannot happen before it completes)
        if self._head_started:
            self.transport.write(_timeout_response(self.head_timeout_s))
        self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class for uvicorn's ``http=`` setting, with this deadline."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": seconds})
