"""The field page at ``/``: static HTML, CSS and plain JavaScript, no build step, no CDN.

Crews open it on a phone, take or pick photos, and see each photo's label and probability. The
page is public (it is only the page); its calls to ``/v1/*`` carry the API key the user typed,
kept in the browser's localStorage. The files live in ``static/`` beside this module and ship in
the wheel as package data (``pyproject.toml``, ``[tool.setuptools.package-data]``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

ASSETS_URL = "/field"

# Everything the page loads comes from this service: no inline script or style, no other
# origin. Thumbnails are blob: URLs of the photos the user picked.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so a new release's page is seen at once
}


def static_dir() -> Path:
    """Where the page's files are (inside the installed package)."""
    return Path(str(files("app.field") / "static"))


class _PageFiles(StaticFiles):
    """StaticFiles whose answers carry :data:`PAGE_HEADERS` (e.g. /field/index.html too)."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


def install_field_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under :data:`ASSETS_URL`."""
    directory = static_dir()
    index = directory / "index.html"

    @app.get("/", include_in_schema=False)
    async def field_page() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.mount(ASSETS_URL, _PageFiles(directory=directory), name="field")
