"""What the service holds while it runs: the classifier, batcher, decode lanes, budget, readiness.

:meth:`ServiceRuntime.start` (called from the app's lifespan) loads the checkpoint once, builds
its inference engine (``INVASIVE_ENGINE``, see :mod:`model.engines`), starts the decode
processes and the inference threads, sets their torch threads and warms them up with dummy
batches of several sizes; only then does readiness turn true. A supervisor task restarts an
inference thread that died (readiness 503 meanwhile). :meth:`ServiceRuntime.begin_drain` (on
SIGTERM, see ``app.__main__``) turns readiness 503 while requests are still served;
:meth:`ServiceRuntime.stop` lets queued work finish, then releases threads and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from prometheus_client import Gauge

from app.admission import MemoryBudget
from app.batcher import MicroBatcher
from app.config import Settings
from app.decoding import DecodeLanes, tiny_jpeg
from app.loop_lag import LoopLag
from app.metrics import ServiceMetrics
from app.pipeline import PredictionPipeline
from app.uploads import UploadsInFlight
from model.checkpoint import CheckpointError
from model.engines.base import records_every_size, warms_every_shape
from model.inference import Classifier, resolve_device
from model.inspection import inspect_image

logger = logging.getLogger("app")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# inference thread re-takes the GIL between every layer of an eager forward pass; while the event
# loop parses uploads it would wait up to this long each time. Measured on the 2-core dev box
# (resnet18, batch 16, a busy Python thread beside it): 5 ms -> 721/811 ms per batch,
# 0.5 ms -> 467/501 ms. Switching more often costs the Python side a few microseconds.
GIL_SWITCH_INTERVAL_S = 0.0005
SUPERVISE_EVERY_S = 0.5
EXIT_WORKER_LOST = 70  # EX_SOFTWARE: an inference worker died and could not be restarted


def warmup_batch_sizes(max_batch_size: int, every_size: bool = False) -> tuple[int, ...]:
    """1, 2, 4, ... up to and including ``max_batch_size``: the shapes traffic will produce.

    ``every_size``: all of 1 ... ``max_batch_size``, for an engine that records each batch size
    it meets (CUDA graphs), so no request pays a recording.
    """
    if every_size:
        return tuple(range(1, max_batch_size + 1))
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
        self.lanes: DecodeLanes | None = None
        self.inspect_pool: ThreadPoolExecutor | None = None
        self.budget = MemoryBudget(
            settings.memory_budget_bytes,
            settings.admission_wait_s,
            metrics.gave_way.inc,
            reserve_bytes=settings.memory_reserve_bytes,
            on_waited=metrics.memory_wait.observe,
        )
        self.uploads = UploadsInFlight()  # ended with 503 when the port closes (app.server)
        self.ready = False  # what /health/ready says
        self.accepting = False  # whether predictions are taken (still true while draining)
        self.draining = False
        self.exit_code = 0
        self._supervisor: asyncio.Task | None = None
        self.not_ready_reason = "the model is not loaded yet"
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None
        self.inference_workers = 0
        self.threads_per_worker = 1
        self._previous_switch_interval: float | None = None
        self.engine_conversion_seconds = _engine_gauge(metrics)
        self._warmup_lock = threading.Lock()
        self._alone_warmed = False  # one worker has warmed the all-threads engine
        self.loop_lag = LoopLag(observe=metrics.loop_lag.observe)

    async def start(self) -> None:
        s = self.settings
        self.not_ready_reason = "loading the model"
        self._previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        torch.set_num_threads(s.resolved_torch_threads)
        started = time.perf_counter()
        try:
            # The engine (INVASIVE_ENGINE) is built here, once: converted or read from its
            # cache, and checked against eager fp32; it falls back to eager rather than fail.
            workers = s.resolved_inference_workers(resolve_device(s.device).type)
            classifier = await asyncio.to_thread(
                Classifier.from_checkpoint,
                s.checkpoint,
                s.device,
                s.precision,
                engine=s.engine,
                cache_dir=s.engine_cache_dir,
                threads=s.resolved_torch_threads,
                streams=workers,
            )
        except (CheckpointError, ValueError) as exc:
            self.not_ready_reason = f"the model failed to load: {exc}"
            logger.error("cannot start: %s", exc)
            raise
        self.load_seconds = time.perf_counter() - started
        self.metrics.model_load_seconds.set(self.load_seconds)
        self.classifier = classifier
        engine = classifier.engine_info
        self.engine_conversion_seconds.labels(
            engine.name, str(bool(engine.from_cache)).lower()
        ).set(engine.conversion_seconds or 0.0)
        logger.info(
            "loaded %s (%s%s) on %s, %s, engine %s%s, in %.2fs",
            classifier.model_id,
            classifier.metadata.arch,
            ", demo checkpoint" if classifier.metadata.demo else "",
            classifier.device,
            engine.precision,
            engine.name,
            " (from the engine cache)" if engine.from_cache else "",
            self.load_seconds,
        )

        self.not_ready_reason = "warming up"
        self.lanes = DecodeLanes(
            classifier.spec,
            max_pixels=s.max_image_pixels,
            light_processes=s.resolved_decode_processes,
            heavy_processes=s.heavy_decode_processes,
            timeout_s=s.decode_timeout_s,
            light_backlog=s.queue_limit,
        )
        # One thread: inspection takes well under a millisecond for a photo (15 ms at worst for
        # a hostile 20 MiB file), and Pillow's warning filters (catch_warnings) are not
        # thread-safe.
        self.inspect_pool = ThreadPoolExecutor(1, "inspect")
        self.pipeline = PredictionPipeline(
            classifier,
            self.lanes,
            self.inspect_pool,
            self.metrics,
            max_pixels=s.max_image_pixels,
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_batch_wait_ms / 1000.0,
            queue_limit=s.queue_limit,
            request_timeout_s=s.request_timeout_s,
            threads=s.resolved_torch_threads,
            decode_in_batch=s.jpeg_decode == "batch",
        )
        self.batcher = self.pipeline.batcher
        self.metrics.track_queue_depth(lambda: self.batcher.queue_depth if self.batcher else 0)
        self.metrics.track_memory(lambda: self.budget.in_use, self.budget.capacity)
        started = time.perf_counter()
        self.threads_per_worker = max(1, s.resolved_torch_threads // workers)
        self.inference_workers = workers
        # Side by side: the decode processes start (and import their decoders) while the
        # inference threads warm up; the one waits on process start-up, the other computes.
        try:
            await asyncio.gather(
                self.lanes.start(),
                self.batcher.start(thread_setup=self._setup_inference_thread, workers=workers),
            )
        except torch.OutOfMemoryError:
            self.not_ready_reason = "out of GPU memory while warming up"
            logger.error(
                "out of GPU memory while warming up (batches up to %d on %s): other processes "
                "may hold it (nvidia-smi); fewer server processes (INVASIVE_PROCESSES=%d), a "
                "smaller INVASIVE_MAX_BATCH_SIZE or INVASIVE_ENGINE=eager need less",
                s.max_batch_size, classifier.device, s.processes,
            )
            raise
        # Pillow registers its format plugins on first use: ~20 ms, paid now, not by a request.
        await asyncio.get_running_loop().run_in_executor(
            self.inspect_pool, inspect_image, tiny_jpeg(), classifier.spec.input_size
        )
        self.warmup_seconds = time.perf_counter() - started
        self.metrics.warmup_seconds.set(self.warmup_seconds)
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")
        self._set_ready(True)
        self.loop_lag.start()
        self.accepting = True
        logger.info(
            "ready after %.2fs of warm-up: %d inference worker(s) x %d torch thread(s), "
            "%d+%d decode processes, plain JPEGs decoded %s, memory budget %d MiB",
            self.warmup_seconds,
            self.inference_workers,
            self.threads_per_worker,
            s.resolved_decode_processes,
            s.heavy_decode_processes,
            f"in the batch ({'nvJPEG' if classifier.device.type == 'cuda' else 'Pillow'})"
            if self.pipeline.decode_in_batch else "by the decode processes",
            s.memory_budget_mb,
        )

    def _set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready = ready
        self.not_ready_reason = reason
        self.metrics.ready.set(1 if ready else 0)

    async def _supervise(self) -> None:
        """Restart inference threads that died; readiness is 503 while any is missing."""
        assert self.batcher is not None
        while True:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            dead = self.batcher.dead_workers()
            if not dead:
                continue
            self._set_ready(False, f"inference worker(s) {dead} died; restarting")
            try:
                for index in dead:
                    await self.batcher.restart_worker(index)
                    self.metrics.worker_restarts.inc()
            except Exception:
                logger.critical("could not restart an inference worker; exiting", exc_info=True)
                self.exit_code = EXIT_WORKER_LOST
                self.accepting = False
                os.kill(os.getpid(), signal.SIGTERM)  # orderly shutdown, then exit non-zero
                return
            if not self.draining:
                self._set_ready(True)

    def begin_drain(self) -> None:
        """SIGTERM: readiness 503 at once (load balancers stop sending), serving goes on."""
        self.draining = True
        self.metrics.draining.set(1)
        self._set_ready(False, "shutting down (draining)")

    def _setup_inference_thread(self) -> None:
        """Runs on each inference thread before it takes work."""
        # torch's intra-op thread count is per calling thread under OpenMP: set it where the
        # model runs. The workers share the torch threads between them.
        _set_torch_threads(self.threads_per_worker)
        assert self.classifier is not None and self.pipeline is not None
        engine = self.classifier.engine
        sizes = (warmup_batch_sizes(self.settings.max_batch_size, records_every_size(engine))
                 if warms_every_shape(engine) else (1,))
        # A lone batch may borrow every thread only with several workers (app.batcher). Its
        # all-threads engine is one (OpenVINO: one stream), so one worker warms it at every
        # size; the others only make their own request for it (batch 1).
        with self._warmup_lock:
            first, self._alone_warmed = not self._alone_warmed, True
        alone_sizes = () if self.inference_workers < 2 else sizes if first else (1,)
        self.pipeline.warm_up(sizes, alone_sizes)
        if self.classifier.device.type == "cuda":
            torch.cuda.synchronize(self.classifier.device)
            # Warm-up's eager runs at every batch size leave GBs in the allocator's cache that
            # serving never needs again (CUDA graphs keep their own pool): give them back, so
            # several server processes (INVASIVE_PROCESSES) fit on one GPU.
            torch.cuda.empty_cache()

    async def stop(self) -> None:
        """Finish what is queued, then release threads and processes."""
        self._set_ready(False, "shutting down")
        self.accepting = False
        await self.loop_lag.stop()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.stop)
        if self.lanes is not None:
            await asyncio.to_thread(self.lanes.stop)
        if self.inspect_pool is not None:
            self.inspect_pool.shutdown(wait=True, cancel_futures=True)
        if self._previous_switch_interval is not None:
            sys.setswitchinterval(self._previous_switch_interval)


def _engine_gauge(metrics: ServiceMetrics) -> Gauge:
    return Gauge(
        "invasive_engine_conversion_seconds",
        "Seconds spent building the inference engine (conversion or cache read, compilation, "
        "parity check; 0 for eager), labelled by the engine running and whether its conversion "
        "came from the engine cache",
        ["engine", "from_cache"],
        registry=metrics.registry,
    )


def _set_torch_threads(n: int) -> None:
    """Set this thread's torch intra-op threads. Under OpenMP each calling thread has its own
    team, initialised lazily on first use from a process-wide value that any other thread may
    change; ``get_num_threads`` forces that lazy init first so our value is the one that sticks."""
    torch.get_num_threads()
    torch.set_num_threads(n)
