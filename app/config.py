"""Service settings: one place, read from ``INVASIVE_*`` environment variables.

Every knob has a documented default that suits a small CPU box; docker and the README override
only what they must (e.g. ``INVASIVE_HOST=0.0.0.0`` in a container).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Configuration of the prediction service (env prefix ``INVASIVE_``)."""

    model_config = SettingsConfigDict(env_prefix="INVASIVE_", extra="ignore")

    checkpoint: Path = Field(
        Path("models/model.safetensors"), description="checkpoint file (.safetensors) to serve"
    )
    host: str = Field("127.0.0.1", description="interface to bind (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"
    )
    api_key: str | None = Field(
        None, description="when set, X-API-Key must equal it on every endpoint but health/metrics"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the service and uvicorn"
    )
    max_batch_size: int = Field(16, ge=1, le=1024, description="most images in one forward pass")
    max_batch_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="longest a batch waits for requests still being decoded to join it; only "
        "spent while such requests exist (never when idle), i.e. on CUDA where requests decode "
        "as they arrive",
    )
    queue_limit: int = Field(
        256, ge=1, description="images waiting for inference before new ones get 503 + Retry-After"
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="largest accepted image file, per file (413 above)"
    )
    max_batch_files: int = Field(32, ge=1, description="most files in one /v1/predict/batch call")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="largest decoded image (width x height); stops pixel bombs"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed by CORS ('*' for any); empty: CORS off",
    )
    torch_threads: int = Field(
        0, ge=0, description="torch threads in all, shared by the inference workers; 0: one per CPU"
    )
    inference_workers: int = Field(
        0,
        ge=0,
        description="threads running forward passes side by side; 0: auto (CPU: one per CPU, "
        "at most 4; CUDA: 1)",
    )
    decode_threads: int = Field(
        0, ge=0, description="threads decoding uploads; 0: one per available CPU"
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def resolved_torch_threads(self) -> int:
        return self.torch_threads or available_cpus()

    def resolved_inference_workers(self, device_type: str) -> int:
        if self.inference_workers:
            return self.inference_workers
        if device_type == "cuda":
            return 1  # one stream of batches; more workers only contend for the GPU
        return max(1, min(4, self.resolved_torch_threads))

    @property
    def resolved_decode_threads(self) -> int:
        return self.decode_threads or available_cpus()
