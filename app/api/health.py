"""Probes and metrics: ``/health/live``, ``/health/ready``, ``/metrics``. Never need the API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.dependencies import Runtime
from app.errors import RETRY_AFTER_SECONDS
from app.schemas import LiveResponse, NotReadyResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get(
    "/health/live",
    summary="Liveness: the process answers",
    response_model=LiveResponse,
)
async def live() -> LiveResponse:
    return LiveResponse()


@router.get(
    "/health/ready",
    summary="Readiness: the model is loaded and warmed up",
    description="200 only once the checkpoint is loaded and warm-up batches have run; "
    "503 with the reason while loading, warming up or shutting down.",
    response_model=ReadyResponse,
    responses={503: {"model": NotReadyResponse, "description": "not ready, with the reason"}},
)
async def ready(runtime: Runtime) -> ReadyResponse | JSONResponse:
    if runtime.ready and runtime.classifier is not None:
        return ReadyResponse(model_id=runtime.classifier.model_id)
    reason = runtime.not_ready_reason or "not ready"
    body = NotReadyResponse(reason=reason, error={"code": "not_ready", "message": reason})
    retry = {"Retry-After": RETRY_AFTER_SECONDS}
    return JSONResponse(body.model_dump(), status_code=503, headers=retry)


# HEAD as well as GET: some uptime checkers probe with HEAD (a 405 reads as "down"). Not in the
# OpenAPI schema: the GET operations document them.
for path, probe in (("/health/live", live), ("/health/ready", ready)):
    router.add_api_route(
        path, probe, methods=["HEAD"], include_in_schema=False, response_model=None
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Requests by route and status, latency histograms (request and per stage), "
    "batch-size histogram, queue depth, model load time.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": "invasive_queue_depth 0.0"}}}},
)
async def metrics(runtime: Runtime) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
