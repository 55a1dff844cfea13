"""The load: asyncio on one thread drives hundreds of requests (transport: :mod:`.http1`).

Three shapes, each bounded in requests and in time: a closed loop (N workers, each sends its
next request when its answer arrives), continuous senders of one payload each (the expensive
files of the starvation phase), and an open loop that sends on a precomputed Poisson schedule
whatever the server does (the only way to overload a server honestly: a closed loop slows
down with it), with a bound on requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks.soak.http1 import Http1Pool
from benchmarks.soak.mix import Arrival
from benchmarks.soak.outcomes import OK, VIOLATION, Result, classify
from benchmarks.soak.payloads import BATCH, Payload


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with uvicorn[standard]): less client CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpxPool:
    """httpx, sharded: one AsyncClient per ``per_client`` requests in flight, each request on the
    least busy one. A single client with hundreds of connections spends milliseconds of CPU per
    request in its pool (see :mod:`benchmarks.soak.http1`)."""

    def __init__(
        self, base_url: str, max_inflight: int, headers: dict[str, str], per_client: int = 8
    ) -> None:
        import httpx

        shards = max(1, -(-max_inflight // per_client))
        # The caller bounds requests in flight: a shard's pool must never be where they queue.
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [
            httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=None)
            for _ in range(shards)
        ]
        self.busy = [0] * shards
        self.stale_retries = 0

    async def post(
        self, path: str, body: bytes, content_type: str
    ) -> tuple[int, dict[str, str], bytes]:
        i = min(range(len(self.busy)), key=self.busy.__getitem__)
        self.busy[i] += 1
        try:
            resp = await self.clients[i].post(
                path, content=body, headers={"content-type": content_type}
            )
        finally:
            self.busy[i] -= 1
        return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


def make_transport(
    kind: str, host: str, port: int, max_inflight: int, headers: dict[str, str]
) -> Http1Pool | HttpxPool:
    if kind == "http1":
        return Http1Pool(host, port, headers)
    if kind == "httpx":
        return HttpxPool(f"http://{host}:{port}", max_inflight, headers)
    raise ValueError(f"unknown client {kind!r}; choose http1 or httpx")


class LoadClient:
    """Sends payloads to one server and turns each answer into a :class:`Result`."""

    def __init__(self, transport: Http1Pool | HttpxPool, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def send(self, payload: Payload, origin: float) -> Result:
        """One request; ``origin``: the phase's start (monotonic), for the send time."""
        started = time.monotonic()
        status = code = transport = None
        retry_after = False
        items: list[int] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                status, headers, body = await self.transport.post(
                    payload.path, payload.body, payload.content_type
                )
            retry_after = "retry-after" in headers
            if status >= 400:
                code = error_code(body)
            elif payload.path == BATCH:
                items = batch_statuses(body)
        except TimeoutError:
            transport = f"timeout after {self.timeout_s:g}s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to get an HTTP answer is the finding itself
            transport = type(exc).__name__
        latency = time.monotonic() - started
        category, reason = classify(payload.kind, status, retry_after, transport, items)
        images_ok = 0
        if category == OK:
            images_ok = sum(1 for s in items if 200 <= s < 300) if items else payload.files
        return Result(
            payload.kind,
            payload.name,
            started - origin,
            latency,
            status,
            code if transport is None else transport,
            category,
            reason,
            images_ok,
        )


def error_code(body: bytes) -> str:
    """``error.code`` of a JSON error body; "non-json-body" for anything else (h11's 400s)."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "non-json-body"


def batch_statuses(body: bytes) -> list[int]:
    """Per-file statuses of a batch answer; [599] when unreadable (judged a violation)."""
    try:
        return [int(item["status"]) for item in json.loads(body)["results"]]
    except (ValueError, KeyError, TypeError):
        return [599]


async def closed_loop(
    client: LoadClient,
    payloads: Sequence[Payload],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    origin: float | None = None,
) -> list[Result]:
    """``concurrency`` workers, each sending the next payload (in rotation) when answered."""
    origin = time.monotonic() if origin is None else origin
    deadline = time.monotonic() + duration_s
    results: list[Result] = []
    counter = iter(range(max_requests))

    async def worker() -> None:
        for i in counter:  # shared iterator: max_requests in all
            if time.monotonic() >= deadline:
                return
            results.append(await client.send(payloads[i % len(payloads)], origin))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def repeat_sender(
    client: LoadClient,
    payload: Payload,
    stop: asyncio.Event,
    results: list[Result],
    origin: float,
    max_requests: int,
) -> None:
    """Keep one ``payload`` in flight: resend it as soon as its answer arrives, until ``stop``."""
    for _ in range(max_requests):
        if stop.is_set():
            return
        results.append(await client.send(payload, origin))


@dataclass
class OpenLoopRun:
    results: list[Result] = field(default_factory=list)
    overflow_times: list[float] = field(default_factory=list)  # arrivals that could not be sent
    overflow_kinds: dict[str, int] = field(default_factory=dict)
    not_sent_late: int = 0  # arrivals dropped because the client fell too far behind
    lag_s: list[float] = field(default_factory=list)  # how late each send was, vs its schedule
    inflight_max: dict[int, int] = field(default_factory=dict)  # second -> most in flight
    unfinished: int = 0  # still unanswered after the drain: cancelled, counted as violations
    wall_s: float = 0.0


async def open_loop(
    client: LoadClient,
    schedule: Sequence[Arrival],
    pick: Callable[[Arrival], Payload],
    max_inflight: int,
    duration_s: float,
    drain_s: float,
) -> OpenLoopRun:
    """Send each arrival at its time; over ``max_inflight`` in flight it is counted, not sent."""
    run = OpenLoopRun()
    inflight: dict[asyncio.Task, tuple[Payload, float]] = {}  # task -> (payload, send time)
    origin = time.monotonic()
    late_limit = origin + duration_s + 5.0  # a client this far behind is no longer open-loop

    def done(task: asyncio.Task) -> None:
        inflight.pop(task, None)
        if not task.cancelled():
            run.results.append(task.result())

    for arrival in schedule:
        now = time.monotonic()
        if now > late_limit:
            run.not_sent_late += 1
            continue
        delay = origin + arrival.t - now
        # Yield even when behind schedule: answers must be read while the client catches up.
        await asyncio.sleep(max(0.0, delay))
        run.lag_s.append(max(0.0, -delay))
        second = int(arrival.t)
        if len(inflight) >= max_inflight:
            run.overflow_times.append(arrival.t)
            run.overflow_kinds[arrival.kind] = run.overflow_kinds.get(arrival.kind, 0) + 1
            continue
        payload = pick(arrival)
        task = asyncio.create_task(client.send(payload, origin))
        inflight[task] = (payload, time.monotonic() - origin)
        task.add_done_callback(done)
        run.inflight_max[second] = max(run.inflight_max.get(second, 0), len(inflight))
    if inflight:
        await asyncio.wait(set(inflight), timeout=drain_s)
    leftovers = {t: v for t, v in inflight.items() if not t.done()}
    run.unfinished = len(leftovers)
    for task in leftovers:
        task.cancel()
    for task in leftovers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    now = time.monotonic() - origin
    for payload, t_send in leftovers.values():  # the client's own timeout should have fired
        reason = "transport error: unanswered when the drain ended"
        run.results.append(
            Result(
                payload.kind,
                payload.name,
                t_send,
                now - t_send,
                None,
                "unfinished",
                VIOLATION,
                reason,
            )
        )
    run.wall_s = time.monotonic() - origin
    return run
