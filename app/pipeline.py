"""A request's images through the stages: decode + preprocess (thread pool) -> micro-batch -> label.

Decoding runs in a small thread pool (Pillow releases the GIL while decoding and resizing), JPEGs
at reduced scale straight toward the model's input size (``model.preprocessing.prepare_input``,
the same function offline ``predict`` uses). Inference runs on the batcher's thread. The event
loop only moves bytes and futures around.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from app.batcher import MicroBatcher, QueueFullError
from app.errors import ApiError
from app.metrics import ServiceMetrics
from model.imaging import ImageDecodeError
from model.inference import Classifier, Prediction
from model.preprocessing import prepare_input

logger = logging.getLogger("app.pipeline")

RETRY_AFTER_SECONDS = "1"


@dataclass(frozen=True)
class ImageResult:
    """One image's prediction and where its time went."""

    prediction: Prediction
    decode_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int


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
        batcher: MicroBatcher,
        decode_pool: Executor,
        metrics: ServiceMetrics,
        max_pixels: int,
    ) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.decode_pool = decode_pool
        self.metrics = metrics
        self.max_pixels = max_pixels

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
        loop = asyncio.get_running_loop()
        self.batcher.expect(len(images))
        announced = len(images)
        try:
            decoded = await asyncio.gather(
                *(loop.run_in_executor(self.decode_pool, self._decode, data) for data in images)
            )
            tensors = [d[0] for d in decoded if isinstance(d[0], torch.Tensor)]
            self.batcher.withdraw(announced - len(tensors))
            announced = len(tensors)
            batched = []
            if tensors:
                handed_over, announced = announced, 0  # submit() takes them off the count
                batched = await self.batcher.submit(tensors, announced=handed_over)
        except QueueFullError as exc:
            self.metrics.images.labels("queue_full").inc(len(images))
            raise queue_full_error(str(exc)) from None
        finally:
            if announced:  # cancelled (client gone) before submitting: stop expecting them
                self.batcher.withdraw(announced)
        return self._assemble(decoded, batched)

    def _decode(self, data: bytes) -> tuple[torch.Tensor | ApiError, float]:
        """Runs on a decode thread. Never raises: a bad image becomes an ApiError value."""
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

    def _assemble(self, decoded: list, batched: list) -> list[ImageResult | ApiError]:
        results: list[ImageResult | ApiError] = []
        rows = iter(batched)
        queue_stage = self.metrics.stage_latency.labels("queue")
        inference_stage = self.metrics.stage_latency.labels("inference")
        for outcome, decode_ms in decoded:
            if isinstance(outcome, ApiError):
                self.metrics.images.labels(outcome.code).inc()
                results.append(outcome)
                continue
            row = next(rows)
            queue_stage.observe(row.queue_ms / 1000.0)
            inference_stage.observe(row.inference_ms / 1000.0)
            self.metrics.images.labels("predicted").inc()
            results.append(
                ImageResult(
                    prediction=self.classifier.interpret(row.probabilities),
                    decode_ms=decode_ms,
                    queue_ms=row.queue_ms,
                    inference_ms=row.inference_ms,
                    batch_size=row.batch_size,
                )
            )
        return results
