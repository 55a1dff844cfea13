"""``/docs`` (Swagger UI), ``/redoc`` and ``/openapi.json``, served without any CDN.

FastAPI's own docs pages load Swagger UI and ReDoc from jsDelivr, which a field laptop or an
air-gapped site cannot reach. The assets come from the ``fastapi-offline`` package instead
(Swagger UI bundle + CSS, ReDoc standalone bundle, favicon) and are served under
:data:`ASSETS_URL`. Who may read the docs follows :attr:`Settings.docs_are_public`: public, behind
the API key, or (public_docs=false without a key) not served at all.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from app.config import Settings
from app.security import require_api_key

ASSETS_URL = "/docs-assets"
OPENAPI_URL = "/openapi.json"

# Swagger UI's default sends the schema's URL to validator.swagger.io for a badge: off.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "deepLinking": True}

# The docs pages may load nothing from another origin. ReDoc's bundle always draws the Redocly
# logo from cdn.redoc.ly (no option turns it off); this stops that request in the browser (the
# logo hides itself). Swagger UI's start-up script is inline, and both UIs inject their styles;
# ReDoc's search runs in a worker made from a blob: URL.
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


def _local_only(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def offline_assets_dir() -> Path:
    """The directory of Swagger UI and ReDoc assets shipped by ``fastapi-offline``."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Add the docs routes to ``app`` (created with ``docs_url=redoc_url=openapi_url=None``)."""
    public = settings.docs_are_public
    if not public and settings.api_key is None:
        return  # INVASIVE_PUBLIC_DOCS=false and no key to ask for: no docs at all
    # The assets are the stock Swagger UI/ReDoc files, nothing about this service: public.
    app.mount(ASSETS_URL, StaticFiles(directory=offline_assets_dir()), name="docs-assets")
    # Behind the key, the schema lists every route and setting a scanner would like to know.
    # Swagger UI then needs the key too: open it with a browser extension that adds X-API-Key,
    # or read /openapi.json with curl.
    keyed = [] if public else [Depends(require_api_key)]

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=keyed)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=keyed)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that strips a path prefix
        page = get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        return _local_only(page)

    @app.get("/redoc", include_in_schema=False, dependencies=keyed)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _local_only(page)
