"""How far behind the event loop runs: the figure that says when one process is not enough.

One event loop per process parses every upload (HTTP, multipart) and sends every answer. When
uploads arrive faster than it can do that (a small model, or a GPU that outruns one process),
the queues that admission watches stay short while every callback waits its turn behind the
others. :class:`LoopLag` is a task that sleeps a short interval and records how late it woke
up: the time a callback due now waits for its turn (``invasive_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

SAMPLE_EVERY_S = 0.025


class LoopLag:
    """Samples the running loop's lag into ``observe``; :meth:`start` it on the loop."""

    def __init__(self, observe: Callable[[float], None], every_s: float = SAMPLE_EVERY_S) -> None:
        self._observe = observe  # e.g. a Prometheus histogram's observe
        self.every_s = every_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.every_s
            await asyncio.sleep(self.every_s)
            self._observe(max(time.monotonic() - due, 0.0))
