"""Dynamic micro-batching: many concurrent requests, one batch at a time, one inference thread.

Requests put items on a bounded queue from the event loop; one dedicated thread takes up to
``max_batch_size`` of them, hands them to ``process`` as one batch (the pipeline decodes and runs
the model there) and gives each request its own outcome back on the event loop. The event loop
never runs the model. Items are opaque here: the batcher knows queues, not images.

When to stop gathering (the vocabulary of Triton's dynamic batcher):

- everything already queued joins the batch at once, up to ``max_batch_size``;
- the thread then waits, at most ``max_wait`` after the first item arrived, only while other
  items are announced (still being prepared, see :meth:`MicroBatcher.expect`) and so about to
  join; with nothing queued and nothing on its way, a lone request runs immediately;
- a full queue refuses new work with :class:`QueueFullError` (the service answers 503 with
  ``Retry-After``) instead of letting latency grow without bound.

Under load the batch itself is the gathering window: while batch *k* runs, requests pile up and
batch *k+1* takes them all.

With several workers, a batch taken while every other worker is idle and nothing else is queued
or announced runs *alone*: inside the ``run_alone`` context (the pipeline lets it use every
inference thread, not just its worker's share), and the other workers take no batch until it is
done. A lone request then gets the whole CPU (OpenVINO batch 1 on the 2-vCPU box: one stream of
2 threads instead of 1), while under load, where the queue is never empty, nothing changes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("app.batcher")


class QueueFullError(RuntimeError):
    """The inference queue is at its limit; the caller should retry later."""


class BatchFailedError(RuntimeError):
    """``process`` raised on the batch this item was in (logged); the worker went on."""


@dataclass(frozen=True)
class BatchedResult:
    """One item's outcome from ``process`` and how long it queued."""

    value: Any
    queue_ms: float  # from joining the queue to the start of its batch
    batch_size: int  # items taken together


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued_at: float


class MicroBatcher:
    """A bounded queue in front of ``process`` (a list of items -> one outcome per item)."""

    def __init__(
        self,
        process: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_limit: int,
        run_alone: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self._process = process
        self._run_alone = run_alone  # the context of a batch that runs with every worker idle
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self._items: collections.deque[_Item] = collections.deque()
        self._expected = 0  # requests announced (decoding) but not yet queued
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0  # workers running a batch
        self._alone = False  # a batch runs alone: the other workers wait for it
        self._threads: list[threading.Thread] = []
        self._thread_setup: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, thread_setup: Callable[[], None] | None = None, workers: int = 1
    ) -> None:
        """Start ``workers`` inference threads; ``thread_setup`` runs on each first.

        Several workers take batches from the one queue and run them side by side. On a CPU,
        two workers of one torch thread each outran one worker of two threads (resnet18 bf16,
        batch 8, 2-core dev box: 188 vs 159 img/s in-process), since each layer's work is too
        small to keep two OpenMP threads busy in step.
        """
        self._thread_setup = thread_setup
        self._threads = [None] * workers  # type: ignore[list-item]
        await asyncio.gather(*(self._start_worker(index) for index in range(workers)))

    async def _start_worker(self, index: int) -> None:
        ready: concurrent.futures.Future = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(self._thread_setup, ready), name=f"inference-{index}",
            daemon=True,
        )
        self._threads[index] = thread
        thread.start()
        await asyncio.wrap_future(ready)

    def dead_workers(self) -> list[int]:
        """Indices of inference threads that ended although the batcher is not stopping."""
        if self._stopping:
            return []
        return [i for i, thread in enumerate(self._threads) if not thread.is_alive()]

    async def restart_worker(self, index: int) -> None:
        """Replace a dead inference thread (its setup, e.g. warm-up, runs again)."""
        logger.warning("restarting inference worker %d", index)
        await self._start_worker(index)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- request side (event loop) ---------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._items)

    def check_capacity(self, n: int = 1) -> None:
        """Raise :class:`QueueFullError` if ``n`` more items would not be accepted now."""
        depth = len(self._items)
        if depth and depth + n > self.queue_limit:
            raise QueueFullError(f"inference queue is full ({depth}/{self.queue_limit})")

    def expect(self, n: int = 1) -> None:
        """Announce ``n`` items that are being prepared and will be submitted (or withdrawn)."""
        with self._cond:
            self._expected += n

    def withdraw(self, n: int = 1) -> None:
        """``n`` announced items will not come after all (their decoding failed)."""
        with self._cond:
            self._expected = max(0, self._expected - n)
            self._cond.notify_all()

    async def submit(self, payloads: Sequence[Any], announced: int = 0) -> list[BatchedResult]:
        """Queue ``payloads`` and wait for their outcomes, in order.

        ``announced``: how many of them were announced with :meth:`expect`.
        """
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(p, loop.create_future(), loop, now) for p in payloads]
        with self._cond:
            self._expected = max(0, self._expected - announced)
            depth = len(self._items)
            if self._stopping:
                raise QueueFullError("the service is shutting down")
            if depth and depth + len(items) > self.queue_limit:
                self._cond.notify_all()
                raise QueueFullError(f"inference queue is full ({depth}/{self.queue_limit})")
            self._items.extend(items)
            self._cond.notify_all()
        return list(await asyncio.gather(*(item.future for item in items)))

    # -- inference thread ------------------------------------------------------------------

    def _run(
        self, thread_setup: Callable[[], None] | None, started: concurrent.futures.Future
    ) -> None:
        try:
            if thread_setup is not None:
                thread_setup()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        while True:
            taken = self._gather()
            if taken is None:
                return
            batch, alone = taken
            try:
                if alone:
                    with self._run_alone():  # type: ignore[misc]
                        self._run_batch(batch)
                else:
                    self._run_batch(batch)
            except BaseException as exc:  # the thread is dying: answer its batch first
                logger.critical("inference worker %s died", threading.current_thread().name)
                failed = BatchFailedError(f"the inference worker died ({exc!r})")
                self._deliver(batch, [failed] * len(batch))
                raise
            finally:
                self._finished(alone)

    def _finished(self, alone: bool) -> None:
        with self._cond:
            self._busy -= 1
            if alone:
                self._alone = False
                self._cond.notify_all()  # the workers held back may take batches again

    def _gather(self) -> tuple[list[_Item], bool] | None:
        """The next batch (never empty) and whether it runs alone; None when stopping."""
        with self._cond:
            while True:
                while not self._items or self._alone:
                    if self._stopping and not self._items:
                        return None
                    self._cond.wait()
                # Items whose request was cancelled while queued are skipped by _take, so it
                # can come back empty: then wait for more instead of running an empty batch.
                batch = self._take(self.max_batch_size)
                if batch:
                    break
            self._busy += 1  # from here on: no other batch may run alone beside this one
            deadline = batch[0].enqueued_at + self.max_wait_s
            while len(batch) < self.max_batch_size and self._expected > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
                batch.extend(self._take(self.max_batch_size - len(batch)))
            # Alone: no other worker busy (or gathering), nothing queued or on its way, and
            # more than one worker whose threads it may borrow.
            alone = (
                self._run_alone is not None
                and len(self._threads) > 1
                and self._busy == 1
                and not self._items
                and self._expected == 0
            )
            if alone:
                self._alone = True  # cleared by _finished
            return batch, alone

    def _take(self, n: int) -> list[_Item]:
        taken = []
        while self._items and len(taken) < n:
            item = self._items.popleft()
            if not item.future.done():  # skip requests whose client already went away
                taken.append(item)
        return taken

    def _run_batch(self, batch: list[_Item]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        try:
            values = self._process([item.payload for item in batch])
            if len(values) != len(batch):
                raise RuntimeError(f"process returned {len(values)} outcomes for {len(batch)}")
        except Exception as exc:  # a failed batch fails its requests, not the service
            logger.exception("processing a batch of %d failed", len(batch))
            failed = BatchFailedError(f"processing the batch failed ({exc!r})")
            self._deliver(batch, [failed] * len(batch))
            return
        results = [
            BatchedResult(
                value=value,
                queue_ms=(started - item.enqueued_at) * 1000.0,
                batch_size=len(batch),
            )
            for item, value in zip(batch, values, strict=True)
        ]
        self._deliver(batch, results)

    @staticmethod
    def _deliver(batch: list[_Item], outcomes: list) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, pairs in by_loop.items():
            # One wake-up of the event loop per batch, not per request. A closed loop means
            # nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list) -> None:
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
