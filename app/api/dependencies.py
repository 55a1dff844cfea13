"""Shared route dependencies: the runtime, and the 503 when the model is not ready."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import unavailable
from app.pipeline import PredictionPipeline
from app.runtime import ServiceRuntime

# ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hop to
# another thread and back on every request for what is an attribute read.


async def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


async def ready_pipeline(request: Request) -> PredictionPipeline:
    """The pipeline, or 503 ``model_not_ready`` while loading, warming up or shutting down.

    While draining after SIGTERM readiness is already 503 but predictions are still served:
    requests a load balancer sent before it noticed must not be lost.
    """
    runtime: ServiceRuntime = request.app.state.runtime
    if not runtime.accepting or runtime.pipeline is None:
        raise unavailable("model_not_ready", f"the model is not ready: {runtime.not_ready_reason}")
    return runtime.pipeline


Runtime = Annotated[ServiceRuntime, Depends(get_runtime)]
ReadyPipeline = Annotated[PredictionPipeline, Depends(ready_pipeline)]
