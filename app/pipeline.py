"""A request's images through the stages: inspect -> admit -> decode -> batch -> infer -> label.

- **inspect** (a small thread pool): ``model.inspection.inspect_image`` reads the header only,
  refuses known amplification shapes (thousands of JPEG scans, chunk and strip floods) and
  says what decoding will cost in memory and whether it is heavy.
- **admit**: that decoded size is charged against the request's share of the memory budget
  (:mod:`app.admission`) before any pixel is decoded; it is given back once the decode is done.
  A batch request's images go in waves that fit the budget beside its upload, so they never
  crowd each other out.
- **decode** (:mod:`app.decoding`): in a killable process of the light or heavy lane, with a
  time budget; the same ``model.preprocessing`` code offline ``predict`` uses, so service and
  training agree to 1e-4.
- **batch + infer** (:mod:`app.batcher`): inference threads stack the decoded (S, S, 3) arrays
  of many requests into one batch (one copy, a channels_last view of it goes to the engine) and
  run one forward pass; a batch that runs with the other workers idle uses all their threads.

With ``decode_in_batch`` (``INVASIVE_JPEG_DECODE=batch``, the default), a *plain* JPEG (one
Huffman scan, YCbCr, complete, light; see :func:`model.device_jpeg.decodes_in_batch`) skips the
decode processes: its bytes join the batch, and the inference thread decodes them just before
the forward pass. On a CPU that is the same Pillow decode, without the hand-off to a decode
process (the 2-vCPU box: c=1 p50 17.1 -> 16.0 ms, c=32 78.9 -> 85.8 photos/s); on CUDA all of
the batch's JPEGs in one nvJPEG call, where a GPU host spends its CPU otherwise (5 CPU-ms per
photo against 0.14). Plain JPEGs decode in time linear in their size (one scan), so the
decode timeout is not needed for them. An image the batch fails to decode is decoded by the
processes and batched again, so it gets the answer (or the 422) it would have got. Everything
else decodes in the processes before the queue, so a slow image can never occupy an inference
thread. The whole request is bounded by ``request_timeout_s``; cancelling it (timeout, client
gone, shutdown) kills its decodes and drops its queued images.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from app.admission import Charge
from app.batcher import BatchedResult, BatchFailedError, MicroBatcher, QueueFullError
from app.decoding import DecodeLanes, tiny_jpeg
from app.errors import ApiError, queue_full_error, unavailable
from app.metrics import ServiceMetrics
from model.device_jpeg import decode_batch, decodes_in_batch
from model.engines.base import using_all_threads
from model.imaging import ImageDecodeError
from model.inference import Classifier, Prediction
from model.inspection import ImageCost, inspect_image
from model.preprocessing import prepare_pixels, stack_pixels

logger = logging.getLogger("app.pipeline")

# A heavy image is decoded in a fresh process (see app.decoding); its own pages (30 MB RSS on the
# dev box, most of it shared with the fork server) come on top of the decode's estimate. Without
# this, the memory test's tree RSS grew 379-410 MB under a 400 MB budget.
HEAVY_PROCESS_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class EncodedJpeg:
    """A plain JPEG's bytes on their way to the batch, decoded there on the model's device."""

    data: bytes
    orientation: int  # EXIF orientation to apply after decoding (nvJPEG ignores it)


# Stands in for an image's probabilities when the device decoder failed on it.
NOT_DECODED = object()

# the (S, S, 3) pixels, or the bytes for the device, or why not; and the decode ms
Decoded = tuple[np.ndarray | EncodedJpeg | ApiError, float]


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

    probabilities: np.ndarray | object  # NOT_DECODED: decode it with Pillow and batch it again
    inference_ms: float
    batch_size: int  # images in the forward pass
    device_decode_ms: float = 0.0  # this image's share of decoding the batch's JPEGs, if any


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
        decode_in_batch: bool = False,
    ) -> None:
        """``threads``: the inference threads in all, which a batch may use when it runs while
        the other workers are idle (0: torch's current setting). ``decode_in_batch``: plain
        JPEGs are decoded in the batch by the inference thread (module docstring)."""
        self.classifier = classifier
        self.decode_in_batch = decode_in_batch
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
        self, images: list[bytes], charge: Charge, in_batch: bool = True
    ) -> list[tuple[BatchedResult, float] | ApiError]:
        """Every image inspected, then decoded and scored in waves that fit the memory budget.

        A batch request's images would otherwise compete with each other: together they can
        need more than the budget (or the heavy decode lane) holds while each alone fits, and
        the last of them got 413 or 503 however long the client retried. So the images that fit
        beside the request's upload go first, together (one forward pass), their memory comes
        back, then the next wave. Only an image that could not fit beside the upload even alone
        gets 413 ``image_too_large``.
        """
        inspected = await asyncio.gather(*(self._inspect(data) for data in images))
        outcomes: list = [cost for cost, _ in inspected]  # errors stay; the rest filled in
        paths = {
            i: self._path(cost, in_batch)
            for i, cost in enumerate(outcomes)
            if not isinstance(cost, ApiError)
        }
        waves: list[list[int]] = [[]]
        used = 0
        wave_heavy = False  # a wave with a heavy decode must fit the budget without the reserve
        for i, (batched, need) in paths.items():
            cost = outcomes[i]
            heavy = cost.heavy and not batched  # heavy decodes may not use the reserve
            if need > charge.room_for(heavy):
                outcomes[i] = charge.too_large(
                    need,
                    f"decoding this {cost.width}x{cost.height} {cost.format} image",
                    "image_too_large",
                    heavy=heavy,
                )
                continue
            if waves[-1] and used + need > charge.room_for(wave_heavy or heavy):
                waves.append([])
                used, wave_heavy = 0, False
            waves[-1].append(i)
            used += need
            wave_heavy = wave_heavy or heavy
        heavy_slots = asyncio.Semaphore(self.lanes.heavy_processes)  # this request's share
        retry = []  # JPEGs the batch failed to decode: decoded by the processes, batched again
        for wave in waves:
            if not wave:
                continue
            holding = charge.held
            try:
                scored = await self._run_wave(
                    [images[i] for i in wave],
                    [(outcomes[i], *paths[i], inspected[i][1]) for i in wave],
                    charge,
                    heavy_slots,
                )
            finally:  # what the wave's in-batch JPEGs held: decoded by now, or never will be
                charge.give_back(charge.held - holding)
            for i, outcome in zip(wave, scored, strict=True):
                outcomes[i] = outcome
                if isinstance(outcome, ApiError):
                    continue
                if outcome[0].value.probabilities is NOT_DECODED:
                    retry.append(i)
        if retry:
            again = await self._decode_then_submit(
                [images[i] for i in retry], charge, in_batch=False
            )
            for i, outcome in zip(retry, again, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _run_wave(
        self,
        images: list[bytes],
        plans: list[tuple[ImageCost, bool, int, float]],
        charge: Charge,
        heavy_slots: asyncio.Semaphore,
    ) -> list[tuple[BatchedResult, float] | ApiError]:
        """Decode ``images`` (``plans``: the arguments of :meth:`_decode` for each) and score
        them in one submission to the batcher."""
        announced = _Announcements(self.batcher)
        try:
            decoded = await asyncio.gather(
                *(
                    self._decode(data, *plan, charge, announced, heavy_slots)
                    for data, plan in zip(images, plans, strict=True)
                )
            )
            for tensor, _ in decoded:  # backpressure on any image holds back the whole request
                if isinstance(tensor, ApiError) and tensor.status == 503:
                    raise tensor
            good = [i for i, (tensor, _) in enumerate(decoded) if not isinstance(tensor, ApiError)]
            try:
                results = (
                    await self.batcher.submit(
                        [decoded[i][0] for i in good], announced=announced.hand_over()
                    )
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
        finally:
            announced.withdraw_all()  # failed or cancelled before submitting
        outcomes: list = [tensor for tensor, _ in decoded]
        for i, result in zip(good, results, strict=True):
            outcomes[i] = (result, decoded[i][1])
        return outcomes

    async def _inspect(self, data: bytes) -> tuple[ImageCost | ApiError, float]:
        """What decoding ``data`` will cost, read from its header (or why it is refused), and
        the ms it took. Never raises for the image's own faults."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcome: ImageCost | ApiError
        try:
            outcome = await loop.run_in_executor(
                self.inspect_pool,
                inspect_image,
                data,
                self.classifier.spec.input_size,
                self.max_pixels,
            )
        except ImageDecodeError as exc:
            outcome = ApiError(exc.status, exc.code, exc.message)
        except Exception as exc:  # any other inspection failure is still the upload's fault
            logger.warning("inspecting an upload failed unexpectedly: %r", exc)
            outcome = ApiError(422, "corrupt_image", "the image could not be decoded")
        elapsed = time.perf_counter() - started
        if isinstance(outcome, ApiError):
            self.metrics.stage_latency.labels("decode").observe(elapsed)
        return outcome, elapsed * 1000.0

    def _path(self, cost: ImageCost, in_batch: bool) -> tuple[bool, int]:
        """Whether the image is decoded in the batch, and the memory its decode holds."""
        if in_batch and self.decode_in_batch and decodes_in_batch(cost):
            # On a CPU decoded in this process's memory, charged like a decode process's and
            # held until its wave's batch has run; on a GPU in device memory: nothing beyond
            # the upload's bytes (charged as they arrived) to charge against the host budget.
            return True, cost.decoded_bytes if self.classifier.device.type == "cpu" else 0
        return False, cost.decoded_bytes + (HEAVY_PROCESS_BYTES if cost.heavy else 0)

    async def _decode(
        self,
        data: bytes,
        cost: ImageCost,
        in_batch: bool,
        needs: int,
        inspect_ms: float,
        charge: Charge,
        announced: _Announcements,
        heavy_slots: asyncio.Semaphore,
    ) -> Decoded:
        """admit -> decode one inspected image (or pass a plain JPEG on to be decoded in the
        batch, ``in_batch``); the ms include its inspection's. Never raises for the image's own
        faults."""
        started = time.perf_counter() - inspect_ms / 1000.0
        what = f"decoding this {cost.width}x{cost.height} {cost.format} image"
        outcome: np.ndarray | EncodedJpeg | ApiError
        try:
            if in_batch:
                await charge.add(needs, what=what, too_large_code="image_too_large")
                announced.expect()
                elapsed = time.perf_counter() - started  # admit; decoding follows in the batch
                self.metrics.stage_latency.labels("decode").observe(elapsed)
                return EncodedJpeg(data, cost.orientation), elapsed * 1000.0
            # A request keeps at most one heavy image per heavy process in the lane: the lane's
            # backlog is shared, and one request must not fill it and be refused by its own.
            async with heavy_slots if cost.heavy else contextlib.nullcontext():
                # returning: a decode process gives it back whatever else the request waits for
                await charge.add(
                    needs,
                    what=what,
                    too_large_code="image_too_large",
                    returning=True,
                    heavy=cost.heavy,
                )
                # Only ordinary photos are announced to the batcher (it may wait a few ms for
                # them); a batch must never wait for an image that decodes for a second.
                if not cost.heavy:
                    announced.expect()
                try:
                    outcome = await self.lanes.decode(data, heavy=cost.heavy)
                except BaseException:
                    if not cost.heavy:
                        announced.withdraw()
                    raise
                finally:
                    charge.give_back(needs, returning=True, heavy=cost.heavy)
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
        if self.decode_in_batch:  # starts the JPEG decoder (nvJPEG: ~0.1-1 s); no metrics
            batch, rows, _ = self._assemble([EncodedJpeg(tiny_jpeg(2 * size), 1)] * 2)
            if rows:  # a decoder that fails here fails requests over to the processes later
                self.classifier.predict_probabilities(batch)
            else:
                logger.warning("decoding JPEGs in the batch failed at warm-up; each such JPEG "
                               "will be decoded again by the decode processes")
        for n in batch_sizes:
            self.classifier.predict_probabilities(stack_pixels([pixel] * n))
        with using_all_threads(self.threads):
            for n in alone_sizes:
                self.classifier.predict_probabilities(stack_pixels([pixel] * n))

    def _score(self, items: Sequence[np.ndarray | EncodedJpeg]) -> list[_Scored]:
        """One forward pass over decoded (S, S, 3) images and plain JPEGs decoded here."""
        started = time.perf_counter()
        batch, rows, device_decode_ms = self._assemble(items)
        probs = self.classifier.predict_probabilities(batch) if rows else None
        inference_ms = (time.perf_counter() - started) * 1000.0 - device_decode_ms
        if rows:
            self.metrics.batch_size.observe(len(rows))
        by_item = dict(zip(rows, range(len(rows)), strict=True))
        # each JPEG decoded here gets its share of that time, not the whole batch's
        jpegs = sum(isinstance(item, EncodedJpeg) for item in items)
        share_ms = device_decode_ms / jpegs if jpegs else 0.0
        return [
            _Scored(
                probs[by_item[i]] if i in by_item else NOT_DECODED,
                inference_ms,
                len(rows),
                share_ms if isinstance(item, EncodedJpeg) else 0.0,
            )
            for i, item in enumerate(items)
        ]

    def _assemble(
        self, items: Sequence[np.ndarray | EncodedJpeg]
    ) -> tuple[torch.Tensor, list[int], float]:
        """The uint8 (N, 3, S, S) channels_last batch, which items are in it (in order), and
        the ms spent decoding JPEGs on the device."""
        jpegs = [i for i, item in enumerate(items) if isinstance(item, EncodedJpeg)]
        if not jpegs:
            return stack_pixels(items), list(range(len(items))), 0.0
        started = time.perf_counter()
        device = self.classifier.device
        # (S, S, 3) per image, so one stack gives the channels_last batch the CPU path gives
        hwc: dict[int, torch.Tensor] = {}
        if device.type == "cpu":
            # Pillow, as the decode processes would, minus the hand-off to them (~1.6 ms)
            for i in jpegs:
                pixels = self._decode_here(items[i].data)
                if pixels is not None:
                    hwc[i] = torch.from_numpy(pixels)
        else:
            on_device = decode_batch(
                [items[i].data for i in jpegs], [items[i].orientation for i in jpegs],
                self.classifier.spec.input_size, device,
            )
            hwc.update((i, image.permute(1, 2, 0))
                       for i, image in zip(jpegs, on_device, strict=True) if image is not None)
        decoded = [i for i, item in enumerate(items) if not isinstance(item, EncodedJpeg)]
        if decoded:
            host = torch.from_numpy(np.stack([items[i] for i in decoded])).to(device)
            hwc.update(zip(decoded, host, strict=True))
        rows = sorted(hwc)
        batch = torch.stack([hwc[i] for i in rows]).permute(0, 3, 1, 2) if rows else None
        return batch, rows, (time.perf_counter() - started) * 1000.0

    def _decode_here(self, data: bytes) -> np.ndarray | None:
        """A plain JPEG decoded in this (inference) thread with Pillow; None if it fails (the
        decode processes then decode it again and report why)."""
        try:
            return prepare_pixels(data, self.classifier.spec, self.max_pixels)
        except Exception:
            return None

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
            decode_ms=decode_ms + scored.device_decode_ms,
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
