"""Limits on the request head that the HTTP server does not fully enforce itself.

uvicorn's h11 parser refuses a request line + headers that is still incomplete past
``h11_max_incomplete_event_size`` (set from ``INVASIVE_MAX_HEADER_BYTES`` in ``app.__main__``) with
a plain 400: that stops a header streamed forever. A complete head that arrived in one read
passes h11 whatever its size, and h11 does not count headers; so both are checked here, before
any route or dependency runs: a request target over the limit gets 414 ``uri_too_long``, headers
over it 431 ``headers_too_large``, more than ``INVASIVE_MAX_HEADER_COUNT`` headers 431
``too_many_headers``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response

HEADER_LINE_OVERHEAD = 4  # ": " and CRLF


class RequestHeadLimits:
    """414/431 for request heads over the configured size or header count."""

    def __init__(self, app: ASGIApp, max_head_bytes: int, max_headers: int) -> None:
        self.app = app
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, code, message = refusal
                response = error_response(status, code, message, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return (
                431,
                "too_many_headers",
                f"the request has {len(headers)} headers, over the limit of {self.max_headers} "
                "(INVASIVE_MAX_HEADER_COUNT)",
            )
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > self.max_head_bytes:
            return (
                414,
                "uri_too_long",
                f"the request target is {target} bytes, over the limit of {self.max_head_bytes} "
                "(INVASIVE_MAX_HEADER_BYTES)",
            )
        size = sum(len(name) + len(value) + HEADER_LINE_OVERHEAD for name, value in headers)
        if size > self.max_head_bytes:
            return (
                431,
                "headers_too_large",
                f"the request headers are {size} bytes, over the limit of {self.max_head_bytes} "
                "(INVASIVE_MAX_HEADER_BYTES)",
            )
        return None
