"""``GET /v1/model``: what is being served (checkpoint metadata, device, precision, engine)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.dependencies import ReadyPipeline, Runtime
from app.errors import error_responses
from app.schemas import EngineInfo, ModelInfo
from app.security import require_api_key

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])


@router.get(
    "/model",
    summary="The served checkpoint",
    description="Model id, the demo flag (true for the generated demo checkpoint), device, "
    "precision, the inference engine actually running (and whether its conversion came from "
    "the cache, or why it fell back to eager), and the checkpoint's full metadata (classes, "
    "threshold, metrics, training).",
    response_model=ModelInfo,
    responses=error_responses(401, 503),
)
async def model_info(
    pipeline: ReadyPipeline,
    runtime: Runtime,
) -> ModelInfo:
    classifier = pipeline.classifier
    meta = classifier.metadata
    engine = classifier.engine_info
    return ModelInfo(
        model_id=classifier.model_id,
        demo=meta.demo,
        arch=meta.arch,
        class_names=meta.class_names,
        positive_class=meta.positive_class,
        threshold=meta.threshold,
        input_size=meta.input_size,
        device=str(classifier.device),
        precision=engine.precision,
        engine=EngineInfo.model_validate(engine, from_attributes=True),
        checkpoint=runtime.settings.checkpoint.name,
        load_seconds=runtime.load_seconds,
        warmup_seconds=runtime.warmup_seconds,
        max_batch_size=runtime.settings.max_batch_size,
        metadata=meta.model_dump(mode="json"),
    )
