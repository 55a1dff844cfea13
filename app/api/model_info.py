"""``GET /v1/model``: what is being served (checkpoint metadata, device, precision, engine)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import APIRouter, Depends

from app.api.dependencies import ReadyPipeline, Runtime
from app.errors import error_responses
from app.schemas import EngineInfo, ModelCost, ModelInfo, UploadLimits
from app.security import require_api_key
from model.ensemble import forward_gflops


@functools.lru_cache(maxsize=8)
def model_cost(arch: str, classes: int, input_size: int, members: int) -> ModelCost:
    """Counted once per model (~50 ms per member architecture, shapes only)."""
    gflops = forward_gflops(arch, classes, input_size, members)
    return ModelCost(members=members, forward_passes_per_image=members,
                     gflops_per_image=round(gflops, 3))


def without_host_paths(value: Any) -> Any:
    """``value`` with every absolute path cut to its last part (``/home/ana/kaggle/train`` ->
    ``train``): the training host's folder layout is nobody's business, and ``/v1/model`` is
    public when no API key is set."""
    if isinstance(value, dict):
        return {key: without_host_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_host_paths(item) for item in value]
    if isinstance(value, str) and (PurePosixPath(value).is_absolute()
                                   or PureWindowsPath(value).drive):
        return PureWindowsPath(value).name if "\\" in value else PurePosixPath(value).name
    return value


router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])


@router.get(
    "/model",
    summary="The served checkpoint",
    description="Model id, the demo flag (true for the generated demo checkpoint), device, "
    "precision, the inference engine actually running (and whether its conversion came from "
    "the cache, or why it fell back to eager), what one image costs (networks, forward passes, "
    "GFLOPs: a fold ensemble runs every member), where plain JPEGs are decoded, the upload "
    "limits (largest file, files per batch, pixels: a client can split and check first), and the "
    "checkpoint's full metadata (classes, threshold, metrics, training, ensemble members).",
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
        task=meta.task,
        positive_class=meta.positive_class,
        threshold=None if meta.multiclass else meta.threshold,
        input_size=meta.input_size,
        device=str(classifier.device),
        precision=engine.precision,
        engine=EngineInfo.model_validate(engine, from_attributes=True),
        checkpoint=runtime.settings.checkpoint.name,
        load_seconds=runtime.load_seconds,
        warmup_seconds=runtime.warmup_seconds,
        max_batch_size=runtime.settings.max_batch_size,
        limits=UploadLimits(
            max_upload_bytes=runtime.settings.max_upload_bytes,
            max_batch_files=runtime.settings.max_batch_files,
            max_image_pixels=runtime.settings.max_image_pixels,
        ),
        jpeg_decoding="batch" if pipeline.decode_in_batch else "processes",
        cost=await asyncio.to_thread(  # the first call counts (~50 ms a member): off the loop
            model_cost, meta.arch, len(meta.class_names), meta.input_size,
            meta.ensemble.members if meta.ensemble else 1),
        metadata=without_host_paths(meta.model_dump(mode="json")),
    )
