"""The load shapes' bookkeeping, with a fake transport (no sockets, a few ms each)."""

import asyncio

from benchmarks.soak.client import LoadClient, closed_loop, open_loop
from benchmarks.soak.mix import Arrival
from benchmarks.soak.outcomes import BACKPRESSURE, OK, VIOLATION
from benchmarks.soak.payloads import BATCH, PREDICT, Payload


class FakeTransport:
    """Answers after ``delay_s`` with ``answer``; counts requests in flight."""

    def __init__(self, delay_s: float, answer: tuple[int, dict, bytes]) -> None:
        self.delay_s, self.answer = delay_s, answer
        self.inflight = self.most_inflight = self.sent = 0
        self.stale_retries = 0

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, dict, bytes]:
        self.sent += 1
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.inflight -= 1
        return self.answer

    async def aclose(self) -> None:
        pass


PHOTO = Payload("photo", "p.jpg", PREDICT, b"body")


def test_closed_loop_keeps_concurrency_and_stops_at_max_requests():
    transport = FakeTransport(0.001, (200, {}, b"{}"))
    results = asyncio.run(closed_loop(LoadClient(transport, 5), [PHOTO], 4, 10.0, 23))
    assert len(results) == transport.sent == 23
    assert transport.most_inflight == 4
    assert all(r.category == OK and r.images_ok == 1 for r in results)


def test_send_reads_error_codes_retry_after_and_batch_items():
    async def one(answer, payload=PHOTO):
        return await LoadClient(FakeTransport(0, answer), 5).send(payload, 0.0)

    busy = asyncio.run(one((503, {"retry-after": "1"}, b'{"error":{"code":"queue_full"}}')))
    assert (busy.category, busy.status_key) == (BACKPRESSURE, "503 queue_full")
    plain = asyncio.run(one((400, {}, b"Invalid HTTP request received.")))
    assert plain.status_key == "400 non-json-body" and plain.category == VIOLATION
    batch = Payload("batch4", "b", BATCH, b"body", files=4)
    body = b'{"results":[{"status":200},{"status":200},{"status":503},{"status":200}]}'
    served = asyncio.run(one((200, {}, body), batch))
    assert served.category == OK and served.images_ok == 3


def test_send_turns_a_timeout_into_a_violation():
    result = asyncio.run(LoadClient(FakeTransport(1.0, (200, {}, b"")), 0.01).send(PHOTO, 0.0))
    assert result.category == VIOLATION and result.status is None
    assert "timeout" in result.reason


def test_open_loop_counts_overflow_and_reports_unanswered_requests_by_kind():
    transport = FakeTransport(5.0, (200, {}, b"{}"))  # never answers within the drain
    schedule = [Arrival(i * 0.001, "photo", i) for i in range(20)]
    run = asyncio.run(
        open_loop(LoadClient(transport, 60), schedule, lambda a: PHOTO, 5, 0.02, drain_s=0.05)
    )
    assert transport.sent == 5 and len(run.overflow_times) == 15
    assert run.overflow_kinds == {"photo": 15}
    assert run.unfinished == 5
    assert [r.kind for r in run.results] == ["photo"] * 5
    assert all(r.category == VIOLATION and "unanswered" in r.reason for r in run.results)
    assert max(run.inflight_max.values()) == 5
