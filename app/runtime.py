"""What the service holds while it runs: the classifier, its batcher and decode threads, readiness.

:meth:`ServiceRuntime.start` (called from the app's lifespan) loads the checkpoint once, starts
the inference thread, sets its torch threads and warms it up with dummy batches of several sizes;
only then does readiness turn true. :meth:`ServiceRuntime.stop` turns readiness off first, lets
queued work finish, then releases the threads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image

from app.batcher import MicroBatcher
from app.config import Settings
from app.metrics import ServiceMetrics
from app.pipeline import PredictionPipeline
from model.checkpoint import CheckpointError
from model.inference import Classifier
from model.preprocessing import prepare_input

logger = logging.getLogger("app")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# inference thread re-takes the GIL between every layer of an eager forward pass; while the event
# loop parses uploads it would wait up to this long each time. Measured on the 2-core dev box
# (resnet18, batch 16, a busy Python thread beside it): 5 ms -> 721/811 ms per batch,
# 0.5 ms -> 467/501 ms. Switching more often costs the Python side a few microseconds.
GIL_SWITCH_INTERVAL_S = 0.0005


def warmup_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to and including ``max_batch_size``: the shapes traffic will produce."""
    sizes = []
    n = 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


class ServiceRuntime:
    """The loaded model and the machinery around it; one per app."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.classifier: Classifier | None = None
        self.batcher: MicroBatcher | None = None
        self.pipeline: PredictionPipeline | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self.ready = False
        self.not_ready_reason = "the model is not loaded yet"
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None
        self.inference_workers = 0
        self.threads_per_worker = 1
        self._previous_switch_interval: float | None = None

    async def start(self) -> None:
        s = self.settings
        self.not_ready_reason = "loading the model"
        self._previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        torch.set_num_threads(s.resolved_torch_threads)
        started = time.perf_counter()
        try:
            classifier = await asyncio.to_thread(
                Classifier.from_checkpoint, s.checkpoint, s.device, s.precision
            )
        except (CheckpointError, ValueError) as exc:
            self.not_ready_reason = f"the model failed to load: {exc}"
            logger.error("cannot start: %s", exc)
            raise
        self.load_seconds = time.perf_counter() - started
        self.metrics.model_load_seconds.set(self.load_seconds)
        self.classifier = classifier
        logger.info(
            "loaded %s (%s%s) on %s, %s, in %.2fs",
            classifier.model_id,
            classifier.metadata.arch,
            ", demo checkpoint" if classifier.metadata.demo else "",
            classifier.device,
            classifier.precision,
            self.load_seconds,
        )

        self.not_ready_reason = "warming up"
        self.decode_pool = ThreadPoolExecutor(
            s.resolved_decode_threads, "decode", initializer=_single_threaded_torch
        )
        self.pipeline = PredictionPipeline(
            classifier,
            self.decode_pool,
            self.metrics,
            max_pixels=s.max_image_pixels,
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_batch_wait_ms / 1000.0,
            queue_limit=s.queue_limit,
        )
        self.batcher = self.pipeline.batcher
        self.metrics.track_queue_depth(lambda: self.batcher.queue_depth if self.batcher else 0)
        started = time.perf_counter()
        workers = s.resolved_inference_workers(classifier.device.type)
        self.threads_per_worker = max(1, s.resolved_torch_threads // workers)
        await self.batcher.start(thread_setup=self._setup_inference_thread, workers=workers)
        self.inference_workers = workers
        # Decoder plugins and decode threads start now, not on the first request.
        await asyncio.get_running_loop().run_in_executor(
            self.decode_pool, prepare_input, _tiny_jpeg(), classifier.spec
        )
        self.warmup_seconds = time.perf_counter() - started
        self.metrics.warmup_seconds.set(self.warmup_seconds)
        self.ready = True
        self.not_ready_reason = ""
        self.metrics.ready.set(1)
        logger.info(
            "ready after %.2fs of warm-up: %d inference worker(s) x %d torch thread(s)",
            self.warmup_seconds,
            self.inference_workers,
            self.threads_per_worker,
        )

    def _setup_inference_thread(self) -> None:
        """Runs on each inference thread before it takes work."""
        # torch's intra-op thread count is per calling thread under OpenMP: set it where the
        # model runs. The workers share the torch threads between them.
        _set_torch_threads(self.threads_per_worker)
        assert self.classifier is not None
        self.classifier.warm_up(warmup_batch_sizes(self.settings.max_batch_size))
        if self.classifier.device.type == "cuda":
            torch.cuda.synchronize(self.classifier.device)

    async def stop(self) -> None:
        self.ready = False
        self.not_ready_reason = "shutting down"
        self.metrics.ready.set(0)
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.stop)
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=True, cancel_futures=True)
        if self._previous_switch_interval is not None:
            sys.setswitchinterval(self._previous_switch_interval)


def _set_torch_threads(n: int) -> None:
    """Set this thread's torch intra-op threads. Under OpenMP each calling thread has its own
    team, initialised lazily on first use from a process-wide value that any other thread may
    change; ``get_num_threads`` forces that lazy init first so our value is the one that sticks."""
    torch.get_num_threads()
    torch.set_num_threads(n)


def _single_threaded_torch() -> None:
    """Decode threads touch torch only for a small HWC->CHW copy: no OpenMP team of their own
    competing with the inference thread's for the cores."""
    _set_torch_threads(1)


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 140, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()
