"""Optional API key: with ``INVASIVE_API_KEY`` set, prediction and model endpoints require it."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from app.errors import ApiError

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Required on /v1/* when the service runs with INVASIVE_API_KEY set.",
)


async def require_api_key(
    request: Request, api_key: Annotated[str | None, Security(api_key_header)] = None
) -> None:
    """401 unless the configured key was sent (compared in constant time)."""
    expected = request.app.state.runtime.settings.api_key
    if expected is None:
        return
    if api_key is None or not secrets.compare_digest(
        api_key.encode("utf-8"), expected.encode("utf-8")
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
