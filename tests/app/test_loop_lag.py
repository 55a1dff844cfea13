"""Event-loop lag (app/loop_lag.py): sampled on the running loop, shown in /metrics."""

from __future__ import annotations

import asyncio
import time

from app.loop_lag import LoopLag


def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not():
    seen: list[float] = []

    async def scenario() -> tuple[list[float], list[float]]:
        lag = LoopLag(observe=seen.append, every_s=0.01)
        lag.start()
        await asyncio.sleep(0.15)
        idle = list(seen)
        time.sleep(0.3)  # what a saturated loop looks like from inside: callbacks run late
        await asyncio.sleep(0.05)
        await lag.stop()
        return idle, seen[len(idle):]

    idle, after = asyncio.run(scenario())
    assert len(idle) >= 5 and max(idle) < 0.05
    assert max(after) >= 0.25


def test_the_service_reports_its_loop_lag(client):
    time.sleep(0.2)  # the app's loop runs in the TestClient's thread: let it take samples
    metrics = client.get("/metrics").text
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("invasive_event_loop_lag_seconds_count")
    )
    assert count >= 2
