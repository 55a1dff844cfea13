"""Every error leaves the service as ``{"error": {"code": ..., "message": ...}}``.

``code`` is stable and machine-readable; ``message`` is for people. FastAPI's own validation and
HTTP errors are reshaped to match, and an unexpected exception becomes a 500 without a traceback
in the body (bad input is always classified earlier and never reaches that handler).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger("app.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "receive_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorDetail


class ApiError(Exception):
    """An error with a status, a stable code and a message, raised anywhere in the service."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


RETRY_AFTER_SECONDS = "1"


def unavailable(code: str, message: str) -> ApiError:
    """A 503 the client should retry: backpressure or not ready, always with ``Retry-After``."""
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER_SECONDS})


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` entries documenting the error shape for ``statuses``."""
    return {
        status: {"model": ErrorBody, "description": _HTTP_CODES.get(status, "error")}
        for status in statuses
    }


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(
    request: Request, exc: StarletteHTTPException
) -> JSONResponse | RedirectResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        meant = _path_meant(request)
        if meant and request.method in ("GET", "HEAD"):
            # a browser that typed /field/: sent on, by path only (never a host from the
            # request's Host header), so it stays on the scheme and host it used
            query = request.url.query
            return RedirectResponse(
                request.scope.get("root_path", "") + meant + (f"?{query}" if query else ""),
                status_code=307,
            )
        message = f"no endpoint at {request.url.path}"
        if meant:
            message += f"; did you mean {meant} (without the trailing slash)?"
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


def _path_meant(request: Request) -> str | None:
    """The path without its trailing slash(es) when a route answers there, else None."""
    path = request.url.path
    bare = path.rstrip("/")
    if not bare or bare == path:
        return None
    # as Starlette's own slash redirect looks for it: does any route match the bare path?
    scope = {**request.scope, "path": bare}
    routes = request.app.router.routes
    return bare if any(route.matches(scope)[0] is not Match.NONE for route in routes) else None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


def queue_full_error(detail: str) -> ApiError:
    """503 ``queue_full`` (+ Retry-After): a bounded queue or decode lane is full."""
    return unavailable("queue_full", f"the service is at capacity ({detail}); retry shortly")
