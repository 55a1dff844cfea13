"""Service settings: one place, read from ``INVASIVE_*`` environment variables.

Every knob has a documented default that suits a small CPU box; docker and the README override
only what they must (e.g. ``INVASIVE_HOST=0.0.0.0`` in a container).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.devices import DEVICE_CHOICES, known_device


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
    engine: Literal["auto", "eager", "compile", "cudagraphs", "openvino", "onnxruntime"] = Field(
        "auto",
        description="what runs the model: auto (CPU: openvino when installed, else eager; "
        "CUDA: cudagraphs), eager (PyTorch), compile (torch.compile; minutes at first start, "
        "needs a C++ compiler on CPU), cudagraphs (CUDA: each batch size's kernels recorded once "
        "and replayed), openvino (CPU), onnxruntime; converted once, checked against eager fp32, "
        "and on any failure eager runs instead (one log line says why)",
    )
    engine_cache_dir: Path | None = Field(
        None,
        description="where engine conversions are kept between starts, keyed by checkpoint "
        "hash, engine and library versions; unset: $XDG_CACHE_HOME/invasive-species/engines "
        "(else ~/.cache/...); not writable: converted in memory at every start",
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
        64,
        ge=1,
        description="images waiting to be decoded, and images waiting for inference, before "
        "new ones get 503 + Retry-After",
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
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes sharing the port (SO_REUSEPORT), each a whole service with "
        "its own model copy and its share of the torch threads, decode processes and memory "
        "budget; more than 1 where one process's event loop is the limit (a GPU host at "
        "thousands of uploads/s)",
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
    decode_processes: int = Field(
        0,
        ge=0,
        description="processes decoding ordinary photos (the light lane); 0: one per CPU",
    )
    heavy_decode_processes: int = Field(
        1,
        ge=1,
        description="processes decoding costly images (large, non-JPEG/PNG/WebP, many scans), "
        "so they never hold up ordinary photos",
    )
    jpeg_decode: Literal["batch", "processes"] = Field(
        "batch",
        description="where plain JPEGs (baseline, YCbCr, complete, up to 25 MP: what cameras "
        "and phones write) are decoded: batch (by the inference thread, just before the forward "
        "pass: Pillow on a CPU, without the hand-off to a decode process; nvJPEG on CUDA, which "
        "frees the CPU a GPU host runs out of first), processes (the decode processes, killable "
        "after INVASIVE_DECODE_TIMEOUT_S); every other image, and any JPEG the batch fails to "
        "decode, goes to the processes",
    )
    decode_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="CPU time one image may use to decode (its decode process's, all threads); "
        "then its process is killed and the image gets 422 decode_timeout. CPU time, not wall "
        "time: an image that waited for a busy CPU is not refused as too costly (its wall time "
        "is bounded by INVASIVE_REQUEST_TIMEOUT_S: 503, retryable)",
    )
    memory_budget_mb: int = Field(
        384,
        ge=16,
        description="memory that requests in flight may hold: upload bytes as received plus each "
        "image's decoded size, read from its header before decoding",
    )
    memory_reserve_percent: float = Field(
        12.5,
        ge=0,
        le=50,
        description="room on top of the memory budget, as a share of it, that only ordinary "
        "work (uploads, ordinary photos' decodes) may use: heavy decodes (huge images, costly "
        "formats) fill the budget at most, so ordinary photos do not wait for room behind them",
    )
    admission_wait_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="how long a request whose work does not fit the memory budget may wait for "
        "room, in all (upload chunks and decodes together), before 503 at_capacity",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="longest a connection may take to send a complete request head (after "
        "connecting, or after its previous response); then 408 header_timeout and the "
        "connection is closed, so idle or trickling connections cannot pile up",
    )
    receive_timeout_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="longest the upload itself may take, from the first body byte to the last "
        "(a 20 MB photo at 2 Mbit/s takes ~80 s); a client trickling its body is then answered "
        "408 receive_timeout instead of holding a connection and its memory charge forever",
    )
    receive_idle_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="longest an upload may pause with no bytes arriving (a stalled client); then "
        "408 receive_timeout and the memory it held is given back, without waiting for "
        "INVASIVE_RECEIVE_TIMEOUT_S (which still bounds it when shorter)",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="longest a request waits for its result (decode + queue + inference); then "
        "503 request_timeout",
    )
    drain_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="after SIGTERM: readiness answers 503 while the service keeps serving this "
        "long, so load balancers stop sending; then queued work finishes and it exits",
    )
    max_header_bytes: int = Field(
        16384, ge=1024, description="largest request line + headers (400 above)"
    )
    max_header_count: int = Field(
        100, ge=8, description="most request headers (431 above)"
    )
    public_docs: bool | None = Field(
        None,
        description="whether /docs and /openapi.json are public; unset: public unless "
        "INVASIVE_API_KEY is set, in which case they need the key too; false without a key: off",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        name = known_device(value)
        if name is None:
            raise ValueError(f"must be {DEVICE_CHOICES}, got {value!r}")
        return name

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # INFO as well as info

    @model_validator(mode="after")
    def _limits_that_fit_together(self) -> Settings:
        """Combinations under which a documented behaviour could never happen."""
        if self.queue_limit < self.max_batch_files:
            raise ValueError(
                f"INVASIVE_QUEUE_LIMIT ({self.queue_limit}) is below INVASIVE_MAX_BATCH_FILES "
                f"({self.max_batch_files}): a batch of more files than the queue holds would "
                "always get 503 queue_full; raise the one or lower the other"
            )
        for name, seconds in (("DECODE_TIMEOUT_S", self.decode_timeout_s),
                              ("ADMISSION_WAIT_S", self.admission_wait_s)):
            if seconds >= self.request_timeout_s:
                raise ValueError(
                    f"INVASIVE_{name} ({seconds:g}) is not below INVASIVE_REQUEST_TIMEOUT_S "
                    f"({self.request_timeout_s:g}): the request's own timeout would always "
                    "come first"
                )
        return self

    @field_validator("api_key", "public_docs", "engine_cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
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
    def resolved_decode_processes(self) -> int:
        return self.decode_processes or available_cpus()

    @property
    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * 1024 * 1024

    @property
    def memory_reserve_bytes(self) -> int:
        return int(self.memory_budget_bytes * self.memory_reserve_percent / 100)

    @property
    def docs_are_public(self) -> bool:
        return self.public_docs if self.public_docs is not None else self.api_key is None
