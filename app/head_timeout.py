"""uvicorn's h11 protocol with a deadline for each request head.

uvicorn times nothing before a request's head is complete: a client that connects and sends
nothing, or sends a head a few bytes at a time (staying under ``INVASIVE_MAX_HEADER_BYTES``),
holds its connection and a file descriptor for as long as it likes, so a few thousand such
clients take every descriptor the process has (slowloris). Behind the compose proxy HAProxy's
``timeout http-request`` guards against this; ``make serve`` and a bare container face clients
directly. Here every connection must deliver a complete request head within
``INVASIVE_HEADER_TIMEOUT_S`` of connecting, and again of its previous response on a kept-alive
connection (checked once a second); otherwise it is closed: with 408 ``header_timeout`` if
part of a head came, silently if nothing did (as nginx does: a browser's unused preconnection
must not read an answer to a request it never sent). The body has its own deadline
(``INVASIVE_RECEIVE_TIMEOUT_S``, app/uploads.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

from uvicorn.protocols.http.h11_impl import H11Protocol

from app.errors import error_body

logger = logging.getLogger("app")


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(  # compact, like the app's own JSON answers
        error_body(
            "header_timeout",
            f"the request head did not arrive within {seconds:g} s (INVASIVE_HEADER_TIMEOUT_S)",
        ),
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HeadTimeoutH11Protocol(H11Protocol):
    """:class:`H11Protocol` that knows when its request head is due (:func:`close_late_heads`).

    No timer per request: one armed and cancelled on every response made ordinary photos wait
    ~0.8-1 s now and then (1 % of them, beside expensive decodes, in six soak runs; not with
    the deadline at 600 s, so the timers' churn, not their firing); the server sweeps its
    connections once a second instead (app/server.py).
    """

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()  # the next request on this connection gets its own deadline

    def _await_head(self) -> None:
        self._head_due = self.loop.time() + self.head_timeout_s
        # A new head replaces ``self.cycle``: while it is still this one, none has completed.
        self._head_cycle = self.cycle
        self._head_started = False  # bytes arrived since the deadline was set

    def close_if_head_late(self, now: float) -> bool:
        """Close the connection if its request head is overdue at ``now``; True if closed."""
        if now < self._head_due or self.cycle is not self._head_cycle:
            return False
        if self.transport.is_closing():
            return False
        cycle = self._head_cycle
        if cycle is not None and not cycle.response_complete:
            return False  # its response is still going out
        logger.debug(
            "closing %s: no request head within %gs (%s)",
            self.client,
            self.head_timeout_s,
            "part of one came" if self._head_started else "nothing came",
        )
        if self._head_started:
            self.transport.write(_timeout_response(self.head_timeout_s))
        self.transport.close()
        return True


def close_late_heads(connections: Iterable[object], now: float) -> int:
    """Close each connection whose request head is overdue; how many were closed."""
    return sum(
        conn.close_if_head_late(now)
        for conn in list(connections)
        if isinstance(conn, HeadTimeoutH11Protocol)
    )


def with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class for uvicorn's ``http=`` setting, with this deadline."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": seconds})
