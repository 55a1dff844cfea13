"""A request's images through the stages: decode + preprocess -> micro-batch -> forward -> label.

Decoding (``model.preprocessing.prepare_input``, the function offline ``predict`` uses) runs in a
small thread pool (Pillow releases the GIL), JPEGs at reduced scale straight toward the model's
input size; the forward pass runs on the batcher's inference thread. The event loop only moves
bytes and futures around. Where decoding happens depends on the device:

- **CPU** (``decode_in_batch``): the inference thread takes the queued uploads, has the pool
  decode them all, then runs the forward pass. Decoding and the model never run at the same
  time, so decode threads cannot steal cores from the model's OpenMP team mid-layer (a team
  waits at every layer for its slowest thread). Measured in-process on the 2-core dev box
  (resnet18 bf16, 16 photos per batch, four interleaved runs under other users' load, a scratch
  script not kept in the repo): 56/62/71/45 img/s phased vs 45/46/63/40 overlapped.
- **CUDA**: each request decodes its own uploads in the pool while the GPU runs other batches,
  so CPU decoding overlaps GPU work; the batcher only stacks tensors and runs the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from app.batcher import BatchedResult, MicroBatcher, QueueFullError
from app.errors import ApiError
from app.metrics import ServiceMetrics
from model.imaging import ImageDecodeError
from model.inference import Classifier, Prediction
from model.preprocessing import prepare_input

logger = logging.getLogger("app.pipeline")

RETRY_AFTER_SECONDS = "1"

Decoded = tuple[torch.Tensor | ApiError, float]  # the tensor (or why not) and decode ms


@dataclass(frozen=True)
class ImageResult:
    """One image's prediction and where its time went."""

    prediction: Prediction
    decode_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True)
class _Scored:
    """What the inference thread hands back for one image that went through the model."""

    probabilities: np.ndarray
    decode_ms: float
    inference_ms: float
    batch_size: int  # images in the forward pass


def queue_full_error(detail: str) -> ApiError:
    return ApiError(
        503,
        "queue_full",
        f"the service is at capacity ({detail}); retry shortly",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


class PredictionPipeline:
    """Scores uploaded image bytes with a :class:`Classifier` behind a :class:`MicroBatcher`."""

    def __init__(
        self,
        classifier: Classifier,
        decode_pool: Executor,
        metrics: ServiceMetrics,
        *,
        max_pixels: int,
        max_batch_size: int,
        max_wait_s: float,
        queue_limit: int,
        decode_in_batch: bool | None = None,
    ) -> None:
        self.classifier = classifier
        self.decode_pool = decode_pool
        self.metrics = metrics
        self.max_pixels = max_pixels
        if decode_in_batch is None:
            decode_in_batch = classifier.device.type == "cpu"
        self.decode_in_batch = decode_in_batch
        self.batcher = MicroBatcher(
            self._decode_and_score if decode_in_batch else self._score,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            queue_limit=queue_limit,
        )

    def check_capacity(self, n: int = 1) -> None:
        """503 before reading an upload when the queue could not take ``n`` more images now."""
        try:
            self.batcher.check_capacity(n)
        except QueueFullError as exc:
            raise queue_full_error(str(exc)) from None

    async def predict(self, images: list[bytes]) -> list[ImageResult | ApiError]:
        """Results in the order of ``images``; a bad image yields its :class:`ApiError` in place.

        A full queue raises :class:`ApiError` (503) for the whole call.
        """
        try:
            if self.decode_in_batch:
                batched = await self.batcher.submit(images)
            else:
                batched = await self._decode_then_submit(images)
        except QueueFullError as exc:
            self.metrics.images.labels("queue_full").inc(len(images))
            raise queue_full_error(str(exc)) from None
        return [self._finish(outcome) for outcome in batched]

    async def _decode_then_submit(self, images: list[bytes]) -> list[BatchedResult | ApiError]:
        """Decode in the pool now (overlapping other batches' forward passes), then queue."""
        loop = asyncio.get_running_loop()
        self.batcher.expect(len(images))  # the batcher may wait briefly for these
        announced = len(images)
        try:
            decoded: list[Decoded] = await asyncio.gather(
                *(loop.run_in_executor(self.decode_pool, self._decode, data) for data in images)
            )
            good = [d for d in decoded if not isinstance(d[0], ApiError)]
            self.batcher.withdraw(announced - len(good))
            handed_over, announced = len(good), 0  # submit() takes them off the count
            scored = iter(await self.batcher.submit(good, announced=handed_over) if good else [])
        finally:
            if announced:  # cancelled (client gone) before submitting: stop expecting them
                self.batcher.withdraw(announced)
        return [d[0] if isinstance(d[0], ApiError) else next(scored) for d in decoded]

    # -- on the inference thread -----------------------------------------------------------

    def _decode_and_score(self, images: list[bytes]) -> list[_Scored | ApiError]:
        """CPU: decode the batch's uploads in the pool (inline when alone), then the model."""
        if len(images) == 1:
            return self._score([self._decode(images[0])])
        return self._score(list(self.decode_pool.map(self._decode, images)))

    def _score(self, decoded: Sequence[Decoded]) -> list[_Scored | ApiError]:
        """One forward pass over the decoded images; failed decodes keep their error."""
        good = [i for i, (tensor, _) in enumerate(decoded) if not isinstance(tensor, ApiError)]
        outcomes: list[_Scored | ApiError] = [tensor for tensor, _ in decoded]
        if not good:
            return outcomes
        started = time.perf_counter()
        probs = self.classifier.predict_probabilities(torch.stack([decoded[i][0] for i in good]))
        inference_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(good))
        for row, i in enumerate(good):
            outcomes[i] = _Scored(probs[row], decoded[i][1], inference_ms, len(good))
        return outcomes

    def _decode(self, data: bytes) -> Decoded:
        """Never raises: a bad image becomes an ApiError value."""
        started = time.perf_counter()
        try:
            outcome: torch.Tensor | ApiError = prepare_input(
                data, self.classifier.spec, max_pixels=self.max_pixels
            )
        except ImageDecodeError as exc:
            outcome = ApiError(exc.status, exc.code, exc.message)
        except Exception as exc:  # any other decoder failure is still the upload's fault
            logger.debug("decoder raised %r", exc)
            outcome = ApiError(422, "corrupt_image", f"the image could not be decoded ({exc})")
        elapsed = time.perf_counter() - started
        self.metrics.stage_latency.labels("decode").observe(elapsed)
        return outcome, elapsed * 1000.0

    # -- back on the event loop ------------------------------------------------------------

    def _finish(self, outcome: BatchedResult | ApiError) -> ImageResult | ApiError:
        value = outcome.value if isinstance(outcome, BatchedResult) else outcome
        if isinstance(value, ApiError):
            self.metrics.images.labels(value.code).inc()
            return value
        assert isinstance(outcome, BatchedResult) and isinstance(value, _Scored)
        self.metrics.stage_latency.labels("queue").observe(outcome.queue_ms / 1000.0)
        self.metrics.stage_latency.labels("inference").observe(value.inference_ms / 1000.0)
        self.metrics.images.labels("predicted").inc()
        return ImageResult(
            prediction=self.classifier.interpret(value.probabilities),
            decode_ms=value.decode_ms,
            queue_ms=outcome.queue_ms,
            inference_ms=value.inference_ms,
            batch_size=value.batch_size,
        )
