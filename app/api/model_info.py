"""``GET /v1/model``: what is being served (checkpoint metadata, device, precision)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.dependencies import ReadyPipeline, Runtime
from app.errors import error_responses
from app.schemas import ModelInfo
from app.security import require_api_key

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])


@router.get(
    "/model",
    summary="The served checkpoint",
    description="Model id, the demo flag (true for the generated demo checkpoint), device, "
    "precision, and the checkpoint's full metadata (classes, threshold, metrics, training).",
    response_model=ModelInfo,
    responses=error_responses(401, 503),
)
async def model_info(
    pipeline: ReadyPipeline,
    runtime: Runtime,
) -> ModelInfo:
    classifier = pipeline.classifier
    meta = classifier.metadata
    return ModelInfo(
        model_id=classifier.model_id,
        demo=meta.demo,
        arch=meta.arch,
        class_names=meta.class_names,
        positive_class=meta.positive_class,
        threshold=meta.threshold,
        input_size=meta.input_size,
        device=str(classifier.device),
        precision=classifier.precision,
        checkpoint=runtime.settings.checkpoint.name,
        load_seconds=runtime.load_seconds,
        warmup_seconds=runtime.warmup_seconds,
        max_batch_size=runtime.settings.max_batch_size,
        metadata=meta.model_dump(mode="json"),
    )
