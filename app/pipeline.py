"""A request's images through the stages: inspect -> admit -> decode -> batch -> infer -> label.

- **inspect** (a small thread pool): ``model.inspection.inspect_image`` reads the header only,
  refuses known amplification shapes (thousands of JPEG scans, chunk and strip floods) and
  says what decoding will cost in memory and whether it is heavy.
- **admit**: that decoded size is charged against the request's share of the memory budget
  (:mod:`app.admission`) before any pixel is decoded; it is given back once the decode is done.
- **decode** (:mod:`app.decoding`): in a killable process of the light or heavy lane, with a
  time budget; the same ``model.preprocessing`` code offline ``predict`` uses, so service and
  training agree to 1e-4.
- **batch + infer** (:mod:`app.batcher`): inference threads stack the decoded (S, S, 3) arrays
  of many requests into one batch (one copy, a channels_last view of it goes to the engine) and
  run one forward pass; a batch that runs with the other workers idle uses all their threads.

Decoding happens before the queue on CPU and CUDA alike, so a slow image can never occupy an
inference thread. The whole request is bounded by ``request_timeout_s``; cancelling it (timeout,
client gone, shutdown) kills its decodes and drops its queued images.
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

from app.admission import Charge
from app.batcher import BatchedResult, BatchFailedError, MicroBatcher, QueueFullError
from app.decoding import DecodeLanes
from app.errors import ApiError, queue_full_error, unavailable
from app.metrics import ServiceMetrics
from model.engines.base import using_all_threads
from model.imaging import ImageDecodeError
from model.inference import Classifier, Prediction
from model.inspection import inspect_image
from model.preprocessing import stack_pixels

logger = logging.getLogger("app.pipeline")

# A heavy image is decoded in a fresh process (see app.decoding); its own pages (30 MB RSS on the
# dev box, most of it shared with the fork server) come on top of the decode's estimate. Without
# this, the memory test's tree RSS grew 379-410 MB under a 400 MB budget.
HEAVY_PROCESS_BYTES = 32 * 1024 * 1024

Decoded = tuple[np.ndarray | ApiError, float]  # the (S, S, 3) pixels (or why not) and decode ms


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
    inference_ms: float
    batch_size: int  # images in the forward pass


class PredictionPipeline:
    """Scores uploaded image bytes with a :class:`Classifier` behind a :class:`MicroBatcher`."""

    def __init__(
        self,
        classifier: Classifier,
        lanes: DecodeLanes,
        inspect_pool: Executor,
        metrics: ServiceMetrics,
        *,
        max_pixels: int,
        max_batch_size: int,
        max_wait_s: float,
        queue_limit: int,
        request_timeout_s: float,
        threads: int = 0,
    ) -> None:
        """``threads``: the inference threads in all, which a batch may use when it runs while
        the other workers are idle (0: torch's current setting)."""
        self.classifier = classifier
        self.lanes = lanes
        self.inspect_pool = inspect_pool
        self.metrics = metrics
        self.max_pixels = max_pixels
        self.request_timeout_s = request_timeout_s
        self.threads = threads or torch.get_num_threads()
        self.batcher = MicroBatcher(
            self._score,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            queue_limit=queue_limit,
            run_alone=lambda: using_all_threads(self.threads),
        )

    def check_capacity(self, n: int = 1) -> None:
        """503 before reading an upload when the queue could not take ``n`` more images now."""
        try:
            self.batcher.check_capacity(n)
        except QueueFullError as exc:
            raise queue_full_error(str(exc)) from None

    async def predict(self, images: list[bytes], charge: Charge) -> list[ImageResult | ApiError]:
        """Results in the order of ``images``; a bad image yields its :class:`ApiError` in place.

        Backpressure (full queue, memory budget busy, too slow) raises :class:`ApiError` (503)
        for the whole call.
        """
        self.check_capacity(len(images))  # the batch endpoint's real file count
        try:
            async with asyncio.timeout(self.request_timeout_s):
                batched = await self._decode_then_submit(images, charge)
        except QueueFullError as exc:
            self.metrics.images.labels("queue_full").inc(len(images))
            raise queue_full_error(str(exc)) from None
        except TimeoutError:
            self.metrics.images.labels("request_timeout").inc(len(images))
            raise unavailable(
                "request_timeout",
                f"no result within {self.request_timeout_s:g} s (INVASIVE_REQUEST_TIMEOUT_S); "
                "the service is overloaded, retry shortly",
            ) from None
        return [self._finish(outcome) for outcome in batched]

    async def _decode_then_submit(
        self, images: list[bytes], charge: Charge
    ) -> list[BatchedResult | ApiError]:
        announced = _Announcements(self.batcher)
        try:
            decoded = await asyncio.gather(
                *(self._decode(data, charge, announced) for data in images)
            )
            for tensor, _ in decoded:  # backpressure on any image holds back the whole request
                if isinstance(tensor, ApiError) and tensor.status == 503:
                    raise tensor
            good = [tensor for tensor, _ in decoded if not isinstance(tensor, ApiError)]
            try:
                results = (
                    await self.batcher.submit(good, announced=announced.hand_over())
                    if good
                    else []
                )
            except BatchFailedError:
                self.metrics.images.labels("inference_failed").inc(len(good))
                raise ApiError(
                    500,
                    "inference_failed",
                    "the model failed on the batch this request was in (logged); retry",
                ) from None
            scored = iter(results)
        finally:
            announced.withdraw_all()  # failed or cancelled before submitting
        return [
            d[0] if isinstance(d[0], ApiError) else _with_decode_ms(next(scored), d[1])
            for d in decoded
        ]

    async def _decode(self, data: bytes, charge: Charge, announced: _Announcements) -> Decoded:
        """inspect -> admit -> decode one image. Never raises for the image's own faults."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcome: np.ndarray | ApiError
        try:
            cost = await loop.run_in_executor(
                self.inspect_pool,
                inspect_image,
                data,
                self.classifier.spec.input_size,
                self.max_pixels,
            )
            needs = cost.decoded_bytes + (HEAVY_PROCESS_BYTES if cost.heavy else 0)
            await charge.add(
                needs,
                what=f"decoding this {cost.width}x{cost.height} {cost.format} image",
                too_large_code="image_too_large",
            )
            # Only ordinary photos are announced to the batcher (it may wait a few ms for
            # them); a batch must never wait for an image that decodes for a second.
            if not cost.heavy:
                announced.expect()
            try:
                pixels = await self.lanes.decode(data, heavy=cost.heavy)
            except BaseException:
                if not cost.heavy:
                    announced.withdraw()
                raise
            finally:
                charge.give_back(needs)
            outcome = pixels
        except ImageDecodeError as exc:
            outcome = ApiError(exc.status, exc.code, exc.message)
        except ApiError as exc:  # decode_timeout, image_too_large (budget), at_capacity (503)
            outcome = exc
        except Exception as exc:  # any other decoder failure is still the upload's fault
            logger.warning("decoding an upload failed unexpectedly: %r", exc)
            outcome = ApiError(422, "corrupt_image", "the image could not be decoded")
        elapsed = time.perf_counter() - started
        self.metrics.stage_latency.labels("decode").observe(elapsed)
        return outcome, elapsed * 1000.0

    # -- on an inference thread ------------------------------------------------------------

    def warm_up(self, batch_sizes: Sequence[int], alone_sizes: Sequence[int] = ()) -> None:
        """Dummy batches of each size, laid out as traffic's, on this worker's threads, and of
        each of ``alone_sizes`` as a lone batch on every thread.

        Engines specialise on shapes and strides (OpenVINO per input shape, ``compile`` per
        layout), so warm-up feeds what :meth:`_score` feeds: stacked (S, S, 3) arrays.
        """
        size = self.classifier.spec.input_size
        pixel = np.zeros((size, size, 3), dtype=np.uint8)
        for n in batch_sizes:
            self.classifier.predict_probabilities(stack_pixels([pixel] * n))
        with using_all_threads(self.threads):
            for n in alone_sizes:
                self.classifier.predict_probabilities(stack_pixels([pixel] * n))

    def _score(self, pixels: Sequence[np.ndarray]) -> list[_Scored]:
        """One forward pass over decoded (S, S, 3) images."""
        started = time.perf_counter()
        probs = self.classifier.predict_probabilities(stack_pixels(pixels))
        inference_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(pixels))
        return [_Scored(probs[row], inference_ms, len(pixels)) for row in range(len(pixels))]

    # -- back on the event loop ------------------------------------------------------------

    def _finish(self, outcome: tuple[BatchedResult, float] | ApiError) -> ImageResult | ApiError:
        if isinstance(outcome, ApiError):
            self.metrics.images.labels(outcome.code).inc()
            return outcome
        batched, decode_ms = outcome
        scored: _Scored = batched.value
        self.metrics.stage_latency.labels("queue").observe(batched.queue_ms / 1000.0)
        self.metrics.stage_latency.labels("inference").observe(scored.inference_ms / 1000.0)
        self.metrics.images.labels("predicted").inc()
        return ImageResult(
            prediction=self.classifier.interpret(scored.probabilities),
            decode_ms=decode_ms,
            queue_ms=batched.queue_ms,
            inference_ms=scored.inference_ms,
            batch_size=scored.batch_size,
        )


class _Announcements:
    """A request's images announced to the batcher (decoding, about to be submitted)."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher
        self.count = 0

    def expect(self) -> None:
        self.batcher.expect(1)
        self.count += 1

    def withdraw(self) -> None:
        self.batcher.withdraw(1)
        self.count -= 1

    def hand_over(self) -> int:
        """How many of the images being submitted were announced; submit() takes them off."""
        count, self.count = self.count, 0
        return count

    def withdraw_all(self) -> None:
        if self.count:
            self.batcher.withdraw(self.count)
            self.count = 0


def _with_decode_ms(result: BatchedResult, decode_ms: float) -> tuple[BatchedResult, float]:
    return result, decode_ms
