"""``create_app(settings)``: the FastAPI application, its middleware, routes and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import health, model_info, predict
from app.config import Settings
from app.docs import install_docs
from app.errors import install_error_handlers
from app.field import install_field_page
from app.limits import RequestHeadLimits
from app.metrics import RequestMetricsMiddleware, ServiceMetrics
from app.runtime import ServiceRuntime
from app.server import CloseConnectionsWhileDraining

DESCRIPTION = """
Detects invasive plants in field photos. POST a photo (JPEG, PNG, WebP, HEIC or AVIF) and get the
probability that it shows the invasive species, scored by the checkpoint this service was
started with (see `GET /v1/model`).

Errors are always JSON: `{"error": {"code": "...", "message": "..."}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm the model once before serving; release it after the last request."""
    runtime: ServiceRuntime = app.state.runtime
    try:
        await runtime.start()
        yield
    finally:
        await runtime.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: from the environment). Nothing loads until startup."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title="Invasive species prediction service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs, /redoc and /openapi.json come from app.docs: offline assets, maybe keyed.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Not Starlette's slash redirect: it builds an absolute URL from the Host header (any
        # client's choice), which behind a TLS proxy points at plain http. app.errors sends a
        # GET on by path only, and tells a POST the path meant (a redirected upload is sent
        # twice, and curl without -L prints nothing).
        redirect_slashes=False,
    )
    app.state.runtime = ServiceRuntime(settings, metrics)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(model_info.router)
    app.include_router(health.router)
    install_docs(app, settings)
    install_field_page(app)  # the page at / is public; its /v1 calls carry the key
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(CloseConnectionsWhileDraining, runtime=app.state.runtime)
    app.add_middleware(
        RequestHeadLimits,
        max_head_bytes=settings.max_header_bytes,
        max_headers=settings.max_header_count,
    )
    # Outermost, so it also counts requests that CORS or an error handler answered.
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
