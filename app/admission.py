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

Requests can also wait *for each other*: two batches that each hold half the budget in upload
bytes both need room to decode, and neither can give its upload back without losing it. Waiting
would end in 503 for both, and their retries would meet again. So when nothing in flight can
free enough for any waiter (every holder is itself waiting), the request that arrived last gives
way at once (503 ``at_capacity``, retryable) and the earlier ones go on: the oldest request never
gives way, so one of them always finishes ("wait-die", as databases break lock cycles). What a
waiting request will get back anyway (an image decoding in a decode process) does not count as
stuck.

Heavy decodes (the slow lane's images: huge or costly formats) fill the budget at most; a
``reserve`` on top of it (``INVASIVE_MEMORY_RESERVE_PERCENT`` of it) is room only the rest may
use: uploads, ordinary photos' decodes. Without it one or two heavy decodes could hold the whole
budget, and ordinary photos beside them waited up to the admission wait (2.04 s seen in CI).
Ordinary bytes fill the reserve first, so they take nothing from heavy decodes until it is full:
the largest image the service decodes stays what the budget allows, whatever else is in flight,
and requests in flight hold at most the budget plus the reserve.

All of it runs on the event loop: no locks, the waiters are futures in a FIFO.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from app.errors import ApiError, unavailable


class _GaveWay(Exception):
    """Set on a waiter whose request gives way to older ones (see the module docstring)."""


@dataclass(eq=False)
class _Waiter:
    n: int
    returning: bool
    heavy: bool
    charge: Charge
    future: asyncio.Future = field(repr=False)


class MemoryBudget:
    """Bytes that the requests in flight may hold together."""

    def __init__(
        self,
        capacity_bytes: int,
        wait_s: float,
        on_give_way: Callable[[], object] | None = None,
        *,
        reserve_bytes: int = 0,
        on_waited: Callable[[float], object] | None = None,
    ) -> None:
        if reserve_bytes < 0:
            raise ValueError(f"reserve {reserve_bytes} must be 0 or more")
        self.capacity = capacity_bytes  # what heavy decodes may fill
        self.reserve = reserve_bytes  # on top, for everything else (module docstring)
        self.wait_s = wait_s
        self.on_give_way = on_give_way  # e.g. a metric's inc
        self.on_waited = on_waited  # a request's wait for room in all, when it ends
        self.in_use = 0
        self.heavy_in_use = 0  # of in_use: heavy decodes'
        self.peak = 0
        self.gave_way = 0  # requests refused to break a wait for each other
        self._arrivals = itertools.count()
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def charge(self) -> Charge:
        """A new, empty charge for one request (``async with budget.charge() as charge``)."""
        return Charge(self, next(self._arrivals))

    def heavy_load(self, in_use: int, heavy_in_use: int) -> int:
        """What ``in_use`` bytes (``heavy_in_use`` of them heavy) take of the room heavy decodes
        have: ordinary bytes count only beyond the reserve."""
        return heavy_in_use + max(0, in_use - heavy_in_use - self.reserve)

    def _fits(self, n: int, heavy: bool, in_use: int, heavy_in_use: int) -> bool:
        """Whether ``n`` more bytes fit beside ``in_use``, of which ``heavy_in_use`` heavy."""
        if heavy:
            return self.heavy_load(in_use, heavy_in_use) + n <= self.capacity
        return in_use + n <= self.capacity + self.reserve

    async def _acquire(
        self, charge: Charge, n: int, wait_s: float, returning: bool, heavy: bool
    ) -> float:
        """Take ``n`` bytes for ``charge``, waiting up to ``wait_s`` for room; the seconds
        waited (TimeoutError when none came, _GaveWay when the request must give way)."""
        if self._fits(n, heavy, self.in_use, self.heavy_in_use):  # the usual case: no wait
            self._take(charge, n, returning, heavy)
            self._give_way_if_stuck()
            return 0.0
        if wait_s <= 0:
            raise TimeoutError
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = _Waiter(n, returning, heavy, charge, loop.create_future())
        self._waiters.append(waiter)
        self._give_way_if_stuck()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), wait_s)
        except BaseException:  # timed out, cancelled or gave way: give back what was granted
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._return(charge, n, returning, heavy)
            else:
                future.cancel()
                self._remove(waiter)
            raise
        # granted by _wake: the bytes are already counted as ours
        return loop.time() - started

    def _take(self, charge: Charge, n: int, returning: bool, heavy: bool) -> None:
        self.in_use += n
        if heavy:
            self.heavy_in_use += n
            charge.heavy_held += n
        self.peak = max(self.peak, self.in_use)
        charge.held += n
        charge.peak = max(charge.peak, charge.held)
        if returning:
            charge.returning += n

    def _return(self, charge: Charge, n: int, returning: bool, heavy: bool) -> None:
        if heavy:
            heavy_n = min(n, charge.heavy_held)
            charge.heavy_held -= heavy_n
            self.heavy_in_use -= heavy_n
        charge.held -= n
        if returning:
            charge.returning -= min(n, charge.returning)
        self.in_use -= n
        self._wake()

    def _wake(self) -> None:
        """Grant every waiter that fits now, in arrival order (first fit)."""
        still_waiting: collections.deque[_Waiter] = collections.deque()
        granted = False
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if self._fits(waiter.n, waiter.heavy, self.in_use, self.heavy_in_use):
                self._take(waiter.charge, waiter.n, waiter.returning, waiter.heavy)
                waiter.future.set_result(None)
                granted = True
            else:
                still_waiting.append(waiter)
        self._waiters = still_waiting
        if granted:  # a waiting request that grew may now close a cycle
            self._give_way_if_stuck()

    def _give_way_if_stuck(self) -> None:
        """While no waiter could fit even once everything not stuck came back, the latest
        request holding stuck bytes gives way (all its waiters fail with _GaveWay).

        Stuck: what a request with a waiter holds, less what comes back without that waiter
        (decodes under way in the decode processes). A request with no waiter is running, and
        all it holds comes back when it ends."""
        while self._waiters:
            waiting = {w.charge for w in self._waiters}
            stuck = sum(c.held - c.returning for c in waiting)
            # (what comes back by itself counted as heavy first: the milder assumption)
            stuck_heavy = sum(max(0, c.heavy_held - c.returning) for c in waiting)
            if any(self._fits(w.n, w.heavy, stuck, stuck_heavy) for w in self._waiters):
                return
            # never empty: with nothing stuck every waiter fits (Charge.add refuses n > room)
            latest = max((c for c in waiting if c.held > c.returning), key=lambda c: c.arrival)
            latest.gave_way = True
            self.gave_way += 1
            if self.on_give_way is not None:
                self.on_give_way()
            for waiter in [w for w in self._waiters if w.charge is latest]:
                self._waiters.remove(waiter)
                waiter.future.set_exception(_GaveWay())

    def _remove(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):  # already granted (or gave way) and popped
            self._waiters.remove(waiter)


class Charge:
    """What one request holds of the budget; everything is given back when it ends."""

    def __init__(self, budget: MemoryBudget, arrival: int = 0) -> None:
        self.budget = budget
        self.arrival = arrival  # order among requests: the later gives way (module docstring)
        self.held = 0
        self.returning = 0  # of held: what comes back on its own (process decodes under way)
        self.heavy_held = 0  # of held: heavy decodes' (may not use the reserve)
        self.peak = 0  # the most this request held at once
        self.waited_s = 0.0  # for room, over all of this request's charges
        self.gave_way = False

    async def add(
        self,
        n: int,
        what: str = "the request",
        too_large_code: str = "payload_too_large",
        *,
        returning: bool = False,
        heavy: bool = False,
    ) -> None:
        """Hold ``n`` more bytes, waiting for room; 413 ``too_large_code`` if this request
        alone could never fit, 503 ``at_capacity`` if no room came before the request's
        waits added up to the budget's ``wait_s``, or if it had to give way to earlier
        requests waiting for what it holds.

        ``returning``: these bytes come back by themselves, whatever else this request waits
        for (give them back with ``give_back(n, returning=True)``). ``heavy``: a heavy
        decode's, which may not use the reserve."""
        if n <= 0:
            return
        if n > self.room_for(heavy):
            raise self.too_large(n, what, too_large_code, heavy=heavy)
        if self.gave_way:
            raise self._gave_way_error(n, what)
        try:
            self.waited_s += await self.budget._acquire(
                self, n, self.budget.wait_s - self.waited_s, returning, heavy
            )
        except _GaveWay:
            raise self._gave_way_error(n, what) from None
        except TimeoutError:
            self.waited_s = self.budget.wait_s  # spent: any further wait is refused at once
            raise unavailable(
                "at_capacity",
                f"the service's memory budget is in use by other requests ({what} needs "
                f"{_mb(n)}; this request waited {self.waited_s:.1f} s for room in all); retry "
                "shortly",
            ) from None

    def _gave_way_error(self, n: int, what: str) -> ApiError:
        return unavailable(
            "at_capacity",
            f"the service's memory budget is held by earlier requests that wait for room too "
            f"({what} needs {_mb(n)} beside the {_mb(self.held)} this request holds); this "
            "one gave way so that they can finish; retry shortly",
        )

    def room_for(self, heavy: bool = False) -> int:
        """The most this request could add, were every other request done (``heavy``: for a
        heavy decode, which may not use the reserve)."""
        budget = self.budget
        if heavy:
            return budget.capacity - budget.heavy_load(self.held, self.heavy_held)
        return budget.capacity + budget.reserve - self.held

    def too_large(
        self, n: int, what: str, code: str = "payload_too_large", *, heavy: bool = False
    ) -> ApiError:
        """413 ``code``: ``n`` more bytes would not fit beside what this request holds."""
        beside = f" beside the {_mb(self.held)} this request holds" if self.held else ""
        budget = self.budget
        over = f"over the service's memory budget of {_mb(budget.capacity)} "
        over += "(INVASIVE_MEMORY_BUDGET_MB"
        if budget.reserve and not heavy:
            over += f", with its {_mb(budget.reserve)} reserve, INVASIVE_MEMORY_RESERVE_PERCENT"
        return ApiError(413, code, f"{what} needs {_mb(n)} of memory{beside}, {over})")

    def give_back(self, n: int, *, returning: bool = False, heavy: bool = False) -> None:
        """Return ``n`` bytes early (e.g. an image's decode memory once it is decoded), taken
        with the same ``returning`` and ``heavy``."""
        n = min(n, self.held)
        if n > 0:
            self.budget._return(self, n, returning, heavy)

    async def __aenter__(self) -> Charge:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.give_back(self.heavy_held, heavy=True)
        self.give_back(self.held)
        self.returning = 0
        if self.budget.on_waited is not None:
            self.budget.on_waited(self.waited_s)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
