"""Decode uploads in worker processes, each image under a time budget, in two lanes.

Why processes: a thread cannot be stopped, so a decoder stuck for 20 s on a crafted JPEG would
hold its thread (and a core) however we time it out. A process can be killed: each image gets
``timeout_s`` of CPU time to decode, after which its process is killed (by the kernel, from
inside: ``app.decode_worker``), replaced by pebble's ``ProcessPool`` (a fork of a small
pre-imported server, milliseconds) and the image answered with 422 ``decode_timeout``.

Why CPU time and not wall time: 422 tells the client its image is at fault. A costly but
legitimate photo decoded in the niced heavy lane while ordinary photos keep every core busy
gets a fraction of a core; on wall time it was refused as "too costly" for the service's load
(4 times in one soak run), and the client was told not to retry. Its wall time is bounded by
the request's own timeout instead, which cancels the decode (killing its process) and answers
a retryable 503 ``request_timeout``.

Why two lanes: ``model.inspection`` says from the header what an image will cost. Ordinary
photos (plain JPEG/PNG/WebP of modest decoded size) go to the light lane, one process per CPU;
everything costly (large decoded size, many scans, HEIC, TIFF, ...) to the heavy lane, by
default one process running at lower CPU priority. So expensive files queue behind each other,
never in front of ordinary photos, and take the CPU mostly when nothing else wants it.

Each lane's backlog is bounded (images scheduled and not yet decoded): beyond it a request gets
503 ``queue_full`` at once, so overload is shed at the door instead of turning into seconds of
waiting (the batcher's queue is bounded the same way).

Plain JPEGs (one scan, YCbCr, complete, light) are the exception by default: the inference
threads decode them in the batch (``INVASIVE_JPEG_DECODE=batch``, :mod:`app.pipeline`), and they
come here only when that fails or ``INVASIVE_JPEG_DECODE=processes``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import multiprocessing
import threading
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pebble import ProcessExpired, ProcessPool
from PIL import Image

from app.decode_worker import CPU_BUDGET_SIGNAL, decode_upload, start_decoder
from app.errors import ApiError, queue_full_error, unavailable
from model.imaging import ImageDecodeError
from model.preprocessing import PreprocessSpec

logger = logging.getLogger("app.decoding")

HEAVY_LANE_NICENESS = 10  # CFS weight ~1/10 of the model's threads when both want a core
HEAVY_BACKLOG_PER_PROCESS = 4  # heavy images take ~0.5-5 s each: a longer line only waits
# A process that decoded a large image keeps much of that memory (the allocator holds freed
# pages), which the budget no longer counts. So a heavy-lane process is replaced after every
# image (a fork of the small server: milliseconds, against a heavy decode's hundreds), and a
# light-lane one after many, which bounds slow growth.
HEAVY_TASKS_PER_PROCESS = 1
LIGHT_TASKS_PER_PROCESS = 500
# The first decode of each process at start-up also waits for the forkserver to start and import
# the decoders (a second or more on a busy 2-core box): not an image's cost, so it is not held to
# INVASIVE_DECODE_TIMEOUT_S (a tight timeout failed start-up there).
STARTUP_DECODE_TIMEOUT_S = 60.0


class DecodeLanes:
    """The light and heavy decode process pools, and the per-image time budget."""

    def __init__(
        self,
        spec: PreprocessSpec,
        *,
        max_pixels: int,
        light_processes: int,
        heavy_processes: int,
        timeout_s: float,
        light_backlog: int = 256,
    ) -> None:
        self.spec = spec
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.light_processes = light_processes
        self.heavy_processes = heavy_processes
        self.backlog_limits = {
            False: light_backlog,
            True: heavy_processes * HEAVY_BACKLOG_PER_PROCESS,
        }
        self.backlog = {False: 0, True: 0}  # images scheduled, not yet decoded, per lane
        self.timeouts = 0
        self.crashes = 0
        self.restarts = 0  # pools replaced after they broke
        self._light: ProcessPool | None = None
        self._heavy: ProcessPool | None = None

    async def start(self) -> None:
        """Start both pools and run one image through every process (imports done now)."""
        self._light = self._new_pool(heavy=False)
        self._heavy = self._new_pool(heavy=True)
        tiny = tiny_jpeg()
        limits = {"timeout_s": max(self.timeout_s, STARTUP_DECODE_TIMEOUT_S),
                  "wall_timeout_s": STARTUP_DECODE_TIMEOUT_S}
        await asyncio.gather(
            *(self.decode(tiny, heavy=False, **limits) for _ in range(self.light_processes)),
            *(self.decode(tiny, heavy=True, **limits) for _ in range(self.heavy_processes)),
        )

    def _new_pool(self, heavy: bool) -> ProcessPool:
        # forkserver: processes fork from a fresh, small server that pre-imported the decoder,
        # never from this process (torch threads and CUDA do not survive a fork).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["app.decode_worker"])
        return ProcessPool(
            self.heavy_processes if heavy else self.light_processes,
            max_tasks=HEAVY_TASKS_PER_PROCESS if heavy else LIGHT_TASKS_PER_PROCESS,
            initializer=start_decoder,
            initargs=(HEAVY_LANE_NICENESS if heavy else 0,),
            context=context,
        )

    def _pool(self, heavy: bool) -> ProcessPool:
        """The lane's pool, started afresh if it broke.

        pebble replaces a process that dies while decoding (the image gets its answer), but a
        process that dies idle (the OOM killer, an operator) or a fork that fails puts the whole
        pool in an error state for good: every later image would fail. So a broken pool is
        stopped and replaced, and only the images scheduled on it meanwhile are lost.
        """
        pool = self._heavy if heavy else self._light
        assert pool is not None, "DecodeLanes.start() was not awaited"
        if pool.active:
            return pool
        self.restarts += 1
        lane = "heavy" if heavy else "light"
        logger.warning("the %s decode lane's process pool broke; starting a new one", lane)
        pool.stop()  # join in the background: a wedged process must not stall the event loop
        threading.Thread(target=pool.join, kwargs={"timeout": 10}, daemon=True).start()
        pool = self._new_pool(heavy)
        if heavy:
            self._heavy = pool
        else:
            self._light = pool
        return pool

    def stop(self) -> None:
        for pool in (self._light, self._heavy):
            if pool is not None:
                pool.stop()
                pool.join(timeout=10)

    async def decode(
        self,
        data: bytes,
        heavy: bool,
        timeout_s: float | None = None,
        wall_timeout_s: float | None = None,
    ) -> np.ndarray:
        """The model-size (S, S, 3) uint8 pixels of ``data``.

        Raises :class:`ImageDecodeError` for a bad image, :class:`ApiError` 422
        ``decode_timeout`` when decoding used up its CPU time (``timeout_s``, default the lanes'
        ``timeout_s``). Wall time is the caller's to bound (a request's timeout): cancelling
        the call kills the decode. ``wall_timeout_s``: a bound of its own (start-up), past which
        the image gets 503 ``decode_busy``.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        lane = "heavy" if heavy else "light"
        if self.backlog[heavy] >= self.backlog_limits[heavy]:
            raise queue_full_error(
                f"{self.backlog[heavy]} images waiting in the {lane} decode lane"
            )
        self.backlog[heavy] += 1
        future = None
        try:
            try:
                future = self._pool(heavy).schedule(
                    decode_upload,
                    args=(data, self.spec, self.max_pixels, timeout_s),
                    timeout=wall_timeout_s,
                )
            except RuntimeError:  # broke between the check and now: the next image gets a new one
                logger.warning("the %s decode lane refused an image", lane, exc_info=True)
                raise unavailable(
                    "decoder_unavailable",
                    f"the {lane} decode lane is restarting; retry shortly",
                ) from None
            return await asyncio.wrap_future(future)
        except (TimeoutError, concurrent.futures.TimeoutError):  # wall_timeout_s, CPU left
            raise unavailable(
                "decode_busy",
                f"the image waited more than {wall_timeout_s:g} s for a CPU to decode it; "
                "retry shortly",
            ) from None
        except BrokenProcessPool:  # the pool broke under this image (not the image's fault)
            logger.warning("the %s decode lane broke while an image waited in it", lane)
            raise unavailable(
                "decoder_unavailable", f"the {lane} decode lane restarted; retry shortly"
            ) from None
        except ProcessExpired as exc:  # the decoder crashed or was killed (e.g. out of memory)
            if exc.exitcode == -CPU_BUDGET_SIGNAL:  # its CPU budget ran out
                self.timeouts += 1
                raise ApiError(
                    422,
                    "decode_timeout",
                    f"the image needed more than {timeout_s:g} s of CPU time to decode "
                    "(INVASIVE_DECODE_TIMEOUT_S); its structure is too costly to decode",
                ) from None
            self.crashes += 1
            logger.warning("a decode process died on an upload: %s", exc)
            raise ImageDecodeError(
                "corrupt_image", "the image could not be decoded (the decoder crashed on it)"
            ) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future is not None and future.cancelled() and not (task and task.cancelling()):
                # not this request's cancellation: its pool broke and was stopped under it
                raise unavailable(
                    "decoder_unavailable", f"the {lane} decode lane restarted; retry shortly"
                ) from None
            if future is not None:
                future.cancel()  # pebble stops the process running it
            raise
        finally:
            self.backlog[heavy] -= 1


def tiny_jpeg(side: int = 1) -> bytes:
    """A plain (baseline, YCbCr) JPEG of ``side`` x ``side`` for warm-ups; 1 fits any pixel
    limit."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()
