"""What an inference engine is, and what a builder gets to make one.

An engine takes the batch the service queues (uint8, ``(N, 3, S, S)``, on the classifier's
device) and returns logits ``(N, classes)``. Normalisation is part of the engine: the eager
engine runs :func:`model.preprocessing.normalize_batch` as always; converted engines trace it
into their graph through :class:`NormalizedModel`, so the one definition of preprocessing is
the one they run, and no torch code runs beside them at inference time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from model.preprocessing import PreprocessSpec, normalize_batch

# Inference precisions by name (settings, checkpoints, CLI flags) and their torch dtypes.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

if TYPE_CHECKING:
    from model.engines.cache import EngineCache


class Engine(Protocol):
    """A model ready to score batches; built once at start-up, called from any thread."""

    name: str  # eager, compile, openvino, onnxruntime
    precision: str  # the precision it computes in: fp32, bf16 or fp16
    # Whether a batch size's first run pays for specialising to it (eager on CUDA picks
    # kernels per shape, ``compile`` traces per shape): then warm-up runs every batch size
    # traffic produces. False: one small batch warms it (see :func:`warms_every_shape`).
    shape_specialised: bool

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) on the classifier's device -> logits (N, classes), any float."""
        ...


def warms_every_shape(engine: Engine) -> bool:
    """Whether warm-up must run every batch size on ``engine`` (True unless it says not)."""
    return getattr(engine, "shape_specialised", True)


def records_every_size(engine: Engine) -> bool:
    """Whether ``engine`` keeps a recording per batch size (CUDA graphs): then warm-up runs every
    size up to the largest batch, not only the powers of two, so no request pays a recording."""
    return getattr(engine, "records_every_size", False)


_WIDTH = threading.local()


@contextlib.contextmanager
def using_all_threads(threads: int) -> Iterator[None]:
    """Forward passes on this thread may use ``threads`` CPU threads (every inference worker's).

    For a batch that runs while the other inference workers are idle and held back
    (:class:`app.batcher.MicroBatcher`): torch engines widen this thread's OpenMP team (its
    setting is per thread); OpenVINO runs its all-threads compiled model (:func:`all_threads`
    tells it so). Both are put back afterwards.
    """
    previous_torch = torch.get_num_threads()
    previous = getattr(_WIDTH, "threads", 0)
    torch.set_num_threads(threads)
    _WIDTH.threads = threads
    try:
        yield
    finally:
        _WIDTH.threads = previous
        torch.set_num_threads(previous_torch)


def all_threads() -> int:
    """The threads granted to this thread by :func:`using_all_threads`; 0 outside it."""
    return getattr(_WIDTH, "threads", 0)


class EngineUnavailable(RuntimeError):
    """This engine cannot run here (wrong device, provider missing)."""


@dataclass
class EngineSource:
    """Everything a builder may use to make its engine."""

    model: torch.nn.Module  # the checkpoint's network: eval mode, fp32, on ``device``
    spec: PreprocessSpec
    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16 (what INVASIVE_PRECISION asked for)
    example: torch.Tensor  # a uint8 batch of 2, for tracing and export
    threads: int  # CPU threads the engine may use in all
    streams: int  # callers that will run batches at the same time (inference workers)
    cache: EngineCache | None  # where conversions are kept; None: convert in memory


@dataclass
class BuiltEngine:
    engine: Engine
    from_cache: bool | None  # None: the engine has no conversion of its own to cache


class NormalizedModel(torch.nn.Module):
    """uint8 batch in, logits out: the shared normalisation in front of the network."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: PreprocessSpec,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(batch, self.spec, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def check_batch(spec: PreprocessSpec, device: torch.device, size: int = 2) -> torch.Tensor:
    """A fixed uint8 batch of smooth, photo-like images (low-resolution noise, upsampled).

    Used to trace the converted engines and to check their probabilities against eager fp32 at
    start-up: the same pixels on every start, so a check that passed once passes again.
    """
    gen = torch.Generator().manual_seed(13)
    coarse = torch.rand((size, 3, 7, 7), generator=gen)
    fine = torch.nn.functional.interpolate(
        coarse, size=(spec.input_size, spec.input_size), mode="bilinear", align_corners=False
    )
    grain = torch.rand(fine.shape, generator=gen) * 0.1
    return ((fine * 0.9 + grain) * 255).round().clamp(0, 255).to(torch.uint8).to(device)
