"""Admission by cost: every request's memory is charged against one budget before it is spent.

Counting requests or files does not bound memory: a 112 KB PNG can decode to 300 MB, and 32
files of 20 MiB are 640 MB of upload. So a request charges what it will hold, as it goes: the
upload bytes as they are received, and each image's decoded size (read from its header by
``model.inspection``) just before that image is decoded, released once the decode is done. Work
that does not fit waits for others to finish, up to ``wait_s`` *per request in all*, then is
refused with 503 + ``Retry-After``; a request that could never fit, even alone, gets 413.

The wait is counted per request, not per charge: an upload is charged chunk by chunk (64-256
KB at a time), and with a wait for each one a 16 MB upload under sustained pressure got room
just in time, chunk after chunk, and took over a minute to be received (benchmarks/soak at 2x
capacity: 13-16 uploads past the client's 60 s). Now it is refused once its waits add up.

Whatever fits goes ahead, even past an earlier, larger waiter (first fit, not strict FIFO): a
16-bit 7000x7000 PNG waiting for 400 MB must not hold up the 1 MB of an ordinary photo behind it
(measured: strict FIFO took ordinary photos from 17 to 436 ms p50 while two such files were in
flight). A large item that keeps not fitting is refused after ``wait_s``: under memory pressure
the costly work is what gets shed.

All of it runs on the event loop: no locks, the waiters are futures in a FIFO.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from types import TracebackType

from app.errors import ApiError, unavailable


class MemoryBudget:
    """Bytes that the requests in flight may hold together."""

    def __init__(self, capacity_bytes: int, wait_s: float) -> None:
        self.capacity = capacity_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def charge(self) -> Charge:
        """A new, empty charge for one request (``async with budget.charge() as charge``)."""
        return Charge(self)

    async def _acquire(self, n: int, wait_s: float) -> float:
        """Take ``n`` bytes, waiting up to ``wait_s`` for room; the seconds waited (TimeoutError
        when none came)."""
        if self.in_use + n <= self.capacity:  # the usual case: no clock, no future
            self._take(n)
            return 0.0
        if wait_s <= 0:
            raise TimeoutError
        loop = asyncio.get_running_loop()
        started = loop.time()
        future = loop.create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), wait_s)
        except BaseException:  # timed out or cancelled: give back what was granted meanwhile
            if future.done() and not future.cancelled():
                self._release(n)
            else:
                future.cancel()
                self._remove(entry)
            raise
        # granted by _wake: the bytes are already counted as ours
        return loop.time() - started

    def _take(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def _release(self, n: int) -> None:
        self.in_use -= n
        self._wake()

    def _wake(self) -> None:
        """Grant every waiter that fits now, in arrival order (first fit)."""
        still_waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        for n, future in self._waiters:
            if future.done():
                continue
            if self.in_use + n <= self.capacity:
                self._take(n)
                future.set_result(None)
            else:
                still_waiting.append((n, future))
        self._waiters = still_waiting

    def _remove(self, entry: tuple[int, asyncio.Future]) -> None:
        with contextlib.suppress(ValueError):  # already granted and popped
            self._waiters.remove(entry)


class Charge:
    """What one request holds of the budget; everything is given back when it ends."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0
        self.peak = 0  # the most this request held at once
        self.waited_s = 0.0  # for room, over all of this request's charges

    async def add(
        self, n: int, what: str = "the request", too_large_code: str = "payload_too_large"
    ) -> None:
        """Hold ``n`` more bytes, waiting for room; 413 ``too_large_code`` if this request
        alone could never fit, 503 ``at_capacity`` if no room came before the request's
        waits added up to the budget's ``wait_s``."""
        if n <= 0:
            return
        if n > self.room:
            raise self.too_large(n, what, too_large_code)
        try:
            self.waited_s += await self.budget._acquire(n, self.budget.wait_s - self.waited_s)
        except TimeoutError:
            self.waited_s = self.budget.wait_s  # spent: any further wait is refused at once
            raise unavailable(
                "at_capacity",
                f"the service's memory budget is in use by other requests ({what} needs "
                f"{_mb(n)}; this request waited {self.waited_s:.1f} s for room in all); retry "
                "shortly",
            ) from None
        self.held += n
        self.peak = max(self.peak, self.held)

    @property
    def room(self) -> int:
        """The most this request could add, were every other request done."""
        return self.budget.capacity - self.held

    def too_large(self, n: int, what: str, code: str = "payload_too_large") -> ApiError:
        """413 ``code``: ``n`` more bytes would not fit beside what this request holds."""
        beside = f" beside the {_mb(self.held)} this request holds" if self.held else ""
        return ApiError(
            413,
            code,
            f"{what} needs {_mb(n)} of memory{beside}, over the service's memory budget of "
            f"{_mb(self.budget.capacity)} (INVASIVE_MEMORY_BUDGET_MB)",
        )

    def give_back(self, n: int) -> None:
        """Return ``n`` bytes early (e.g. an image's decode memory once it is decoded)."""
        n = min(n, self.held)
        if n > 0:
            self.held -= n
            self.budget._release(n)

    async def __aenter__(self) -> Charge:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.give_back(self.held)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
