"""Response bodies, with the examples shown in the OpenAPI docs at ``/docs``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ErrorDetail

_PREDICTION_EXAMPLE = {
    "label": "invasive",
    "invasive": True,
    "probability": 0.93,
    "probabilities": {"not_invasive": 0.07, "invasive": 0.93},
    "threshold": 0.5,
    "model_id": "resnet18-3f2a9c1b7d4e",
}
_TIMING_EXAMPLE = {
    "decode_ms": 3.1, "queue_ms": 0.2, "inference_ms": 11.8, "batch_size": 1, "memory_wait_ms": 0.0,
}


class Timing(BaseModel):
    """Where one image's time went inside the service."""

    decode_ms: float = Field(description="decoding and preprocessing the upload")
    queue_ms: float = Field(description="waiting for the inference thread and batch-mates")
    inference_ms: float = Field(description="the forward pass of the batch this image was in")
    batch_size: int = Field(description="images in that forward pass")
    memory_wait_ms: float = Field(
        0.0,
        description="of the request's time, waiting for room in the memory budget (its upload "
        "and its images' decodes together; the same for every image of a batch)",
    )


class PredictionResponse(BaseModel):
    """One photo's answer."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_PREDICTION_EXAMPLE, "timing": _TIMING_EXAMPLE}]}
    )

    label: str = Field(description="the predicted class name")
    invasive: bool | None = Field(
        description="probability >= threshold; null for a multi-class model (no invasive class)"
    )
    probability: float = Field(
        description="probability of the invasive (positive) class; for a multi-class model, "
        "of the top class (the label)"
    )
    probabilities: dict[str, float] = Field(description="probability of every class")
    threshold: float | None = Field(
        description="decision threshold stored in the checkpoint; null for a multi-class model "
        "(the answer is the top class)"
    )
    model_id: str = Field(description="architecture and hash of the checkpoint file")
    timing: Timing


class BatchItem(BaseModel):
    """One file of a batch request: a prediction, or the error for that file alone."""

    index: int = Field(description="position of the file in the request")
    filename: str | None = Field(description="the file name the client sent")
    status: int = Field(description="HTTP status this file alone would have had")
    prediction: PredictionResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    """Results in the order the files were sent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_id": _PREDICTION_EXAMPLE["model_id"],
                    "count": 2,
                    "succeeded": 1,
                    "results": [
                        {
                            "index": 0,
                            "filename": "plot-17.jpg",
                            "status": 200,
                            "prediction": {**_PREDICTION_EXAMPLE, "timing": _TIMING_EXAMPLE},
                            "error": None,
                        },
                        {
                            "index": 1,
                            "filename": "notes.txt",
                            "status": 415,
                            "prediction": None,
                            "error": {
                                "code": "unsupported_media_type",
                                "message": "the file is not an image in a supported format "
                                "(JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP, TIFF)",
                            },
                        },
                    ],
                }
            ]
        }
    )

    model_id: str
    count: int
    succeeded: int
    results: list[BatchItem]


class LiveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "alive"}]})

    status: str = "alive"


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "model_id": "resnet18-3f2a9c1b7d4e"}]}
    )

    status: str = "ready"
    model_id: str


class NotReadyResponse(BaseModel):
    """503 body of ``/health/ready``: the usual error shape plus the reason."""

    status: str = "not_ready"
    reason: str
    error: ErrorDetail


class EngineInfo(BaseModel):
    """What runs the model (``INVASIVE_ENGINE``) and what building it took."""

    name: str = Field(description="the engine running: eager, compile, openvino or onnxruntime")
    requested: str = Field(description="the engine asked for (INVASIVE_ENGINE), e.g. auto")
    precision: str = Field(description="the precision it computes in: fp32, bf16 or fp16")
    from_cache: bool | None = Field(
        description="true when its conversion was read from the engine cache, false when it was "
        "converted at this start; null for eager (nothing to convert)"
    )
    conversion_seconds: float | None = Field(
        description="seconds spent building it at start-up (conversion or cache read, "
        "compilation, the parity check against eager fp32); null for eager"
    )
    fallback_reason: str | None = Field(
        description="why the requested engine is not the one running (it failed to import, "
        "convert or match eager fp32 at start-up); null when it is"
    )


class ModelCost(BaseModel):
    """What scoring one image costs this model, whatever the hardware."""

    members: int = Field(description="networks in the model: k for a fold ensemble, else 1")
    forward_passes_per_image: int = Field(
        description="network forward passes per image (an ensemble runs every member)"
    )
    gflops_per_image: float = Field(
        description="giga floating-point operations per image at the model's input size (a "
        "multiply-add counts 2), all members together"
    )


class UploadLimits(BaseModel):
    """What one request may carry, so a client can split and check before it sends."""

    max_upload_bytes: int = Field(description="largest file (INVASIVE_MAX_UPLOAD_BYTES)")
    max_batch_files: int = Field(description="files in one batch (INVASIVE_MAX_BATCH_FILES)")
    max_image_pixels: int = Field(description="largest image (INVASIVE_MAX_IMAGE_PIXELS)")


class ModelInfo(BaseModel):
    """What is being served, where, and how."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_id": "resnet18-3f2a9c1b7d4e",
                    "demo": False,
                    "arch": "resnet18",
                    "class_names": ["not_invasive", "invasive"],
                    "task": "binary",
                    "positive_class": "invasive",
                    "threshold": 0.5,
                    "input_size": 224,
                    "device": "cpu",
                    "precision": "bf16",
                    "engine": {
                        "name": "openvino",
                        "requested": "auto",
                        "precision": "bf16",
                        "from_cache": True,
                        "conversion_seconds": 0.31,
                        "fallback_reason": None,
                    },
                    "checkpoint": "model.safetensors",
                    "load_seconds": 0.41,
                    "warmup_seconds": 1.2,
                    "max_batch_size": 16,
                    "limits": {"max_upload_bytes": 20971520, "max_batch_files": 32,
                               "max_image_pixels": 50000000},
                    "jpeg_decoding": "batch",
                    "cost": {"members": 1, "forward_passes_per_image": 1,
                             "gflops_per_image": 3.63},
                    "metadata": {"format": "invasive-species-checkpoint", "metrics": {}},
                }
            ]
        },
    )

    model_id: str
    demo: bool = Field(description="true for the generated demo checkpoint: not a real model")
    arch: str
    class_names: list[str]
    task: str = Field(
        description="binary (is the invasive class present: invasive, probability of it, "
        "threshold) or multiclass (the top class of class_names; invasive and threshold null)"
    )
    positive_class: str | None = Field(description="the invasive class; null when multiclass")
    threshold: float | None = Field(description="decision threshold; null when multiclass")
    input_size: int
    device: str
    precision: str = Field(description="the precision the model computes in (the engine's)")
    engine: EngineInfo
    checkpoint: str = Field(description="file name of the served checkpoint")
    load_seconds: float | None
    warmup_seconds: float | None
    max_batch_size: int
    limits: UploadLimits
    jpeg_decoding: Literal["batch", "processes"] = Field(
        description="where plain JPEGs are decoded (INVASIVE_JPEG_DECODE): 'batch' (by the "
        "inference thread before the forward pass: Pillow on a CPU, nvJPEG on CUDA) or "
        "'processes' (the decode processes); other images always by the processes"
    )
    cost: ModelCost
    metadata: dict[str, Any] = Field(description="the checkpoint's full metadata")
