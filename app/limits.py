"""Protocol limits the HTTP server does not enforce itself: the number of request headers.

The size of the request line and headers is bounded by uvicorn's h11 parser
(``h11_max_incomplete_event_size``, set from ``INVASIVE_MAX_HEADER_BYTES`` in ``app.__main__``):
an oversized head is refused with 400 before the app sees it. h11 does not count headers, so a
head of many tiny headers is stopped here with 431 before any route or dependency runs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response


class HeaderCountLimit:
    """431 ``too_many_headers`` for requests with more than ``max_headers`` headers."""

    def __init__(self, app: ASGIApp, max_headers: int) -> None:
        self.app = app
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > self.max_headers:
            response = error_response(
                431,
                "too_many_headers",
                f"the request has {len(scope['headers'])} headers, over the limit of "
                f"{self.max_headers} (INVASIVE_MAX_HEADER_COUNT)",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
