"""``POST /v1/predict`` and ``POST /v1/predict/batch``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.api.dependencies import ReadyPipeline, Runtime
from app.disconnects import unless_client_leaves
from app.errors import ApiError, ErrorDetail, error_responses
from app.memory import trimmed_after
from app.pipeline import ImageResult, PredictionPipeline
from app.schemas import BatchItem, BatchResponse, PredictionResponse, Timing
from app.security import require_api_key
from app.uploads import read_uploads

router = APIRouter(prefix="/v1", tags=["predict"], dependencies=[Depends(require_api_key)])

_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 503)


def _upload_request_body(field: str, many: bool) -> dict:
    """OpenAPI for the upload: the route reads the body itself (see app.uploads)."""
    binary = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    content: dict = {
        "multipart/form-data": {
            "schema": {"type": "object", "required": [field], "properties": {field: schema}}
        }
    }
    if not many:  # the image itself as the body
        content |= {"image/*": {"schema": binary}, "application/octet-stream": {"schema": binary}}
    return {"requestBody": {"required": True, "content": content}}


def _prediction_body(
    result: ImageResult, pipeline: PredictionPipeline, memory_wait_s: float
) -> PredictionResponse:
    p = result.prediction
    return PredictionResponse(
        label=p.label,
        invasive=p.invasive,
        probability=p.probability,
        probabilities=p.probabilities,
        threshold=None if p.invasive is None else pipeline.classifier.metadata.threshold,
        model_id=pipeline.classifier.model_id,
        timing=Timing(
            decode_ms=round(result.decode_ms, 3),
            queue_ms=round(result.queue_ms, 3),
            inference_ms=round(result.inference_ms, 3),
            batch_size=result.batch_size,
            memory_wait_ms=round(memory_wait_s * 1000.0, 3),
        ),
    )


@router.post(
    "/predict",
    summary="Score one photo",
    description="Send one image (JPEG, PNG, WebP, HEIC or AVIF; the format is read from the bytes) "
    "as multipart field `file`, or as the request body itself with `Content-Type: image/jpeg` "
    "(any `image/*`, or `application/octet-stream`). Returns the label, the probability of "
    "the invasive class, every class's probability, the checkpoint's threshold, the model id "
    "and timings. For a multi-class model the label is the top class, `probability` its "
    "probability, and `invasive` and `threshold` are null.",
    response_model=PredictionResponse,
    responses=_ERRORS,
    openapi_extra=_upload_request_body("file", many=False),
)
async def predict(
    request: Request,
    pipeline: ReadyPipeline,
    runtime: Runtime,
) -> PredictionResponse:
    pipeline.check_capacity(1)
    async with runtime.budget.charge() as charge, trimmed_after(charge):
        uploads = await read_uploads(
            request, "file", 1, runtime.settings.max_upload_bytes, charge,
            runtime.settings.receive_timeout_s, runtime.uploads, runtime.settings.receive_idle_s,
            raw_body=True,
        )
        (outcome,) = await unless_client_leaves(
            request.receive, pipeline.predict([uploads[0].data], charge)
        )
    if isinstance(outcome, ApiError):
        raise outcome
    return _prediction_body(outcome, pipeline, charge.waited_s)


@router.post(
    "/predict/batch",
    summary="Score several photos in one request",
    description="Send up to `INVASIVE_MAX_BATCH_FILES` images as repeated multipart field "
    "`files`. Results come back in the order sent, each with its file name; a bad file gets "
    "its own error and does not fail the others.",
    response_model=BatchResponse,
    responses=_ERRORS,
    openapi_extra=_upload_request_body("files", many=True),
)
async def predict_batch(
    request: Request,
    pipeline: ReadyPipeline,
    runtime: Runtime,
) -> BatchResponse:
    settings = runtime.settings
    pipeline.check_capacity(1)
    async with runtime.budget.charge() as charge, trimmed_after(charge):
        uploads = await read_uploads(
            request, "files", settings.max_batch_files, settings.max_upload_bytes, charge,
            settings.receive_timeout_s, runtime.uploads, settings.receive_idle_s,
        )
        outcomes = await unless_client_leaves(
            request.receive, pipeline.predict([upload.data for upload in uploads], charge)
        )
    items = []
    for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True)):
        if isinstance(outcome, ApiError):
            items.append(
                BatchItem(
                    index=index,
                    filename=upload.filename,
                    status=outcome.status,
                    error=ErrorDetail(code=outcome.code, message=outcome.message),
                )
            )
        else:
            items.append(
                BatchItem(
                    index=index,
                    filename=upload.filename,
                    status=200,
                    prediction=_prediction_body(outcome, pipeline, charge.waited_s),
                )
            )
    return BatchResponse(
        model_id=pipeline.classifier.model_id,
        count=len(items),
        succeeded=sum(item.status == 200 for item in items),
        results=items,
    )
