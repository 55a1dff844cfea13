"""The micro-batcher on its own, with a fake model: gathering, ordering, limits, failures."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest
import torch

from app.batcher import BatchFailedError, MicroBatcher, QueueFullError


class FakeModel:
    """A ``process`` function: item i's outcome is [id, batch size], id = pixel [0,0,0] of i."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def __call__(self, items: list[torch.Tensor]) -> list[np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(items))
        ids = torch.stack(items)[:, 0, 0, 0].float().numpy()
        return list(np.stack([ids, np.full_like(ids, len(items))], axis=1))


def image(i: int) -> torch.Tensor:
    return torch.full((3, 4, 4), i, dtype=torch.uint8)


def run(coro_fn, batcher: MicroBatcher):
    async def main():
        await batcher.start()
        try:
            return await coro_fn()
        finally:
            batcher.stop()

    return asyncio.run(main())


def test_lone_request_does_not_wait_for_batch_mates():
    fake = FakeModel()
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=2.0, queue_limit=8)

    async def one():
        started = time.perf_counter()
        (result,) = await batcher.submit([image(7)])
        return result, time.perf_counter() - started

    result, elapsed = run(one, batcher)
    assert result.value[0] == 7
    assert result.batch_size == 1
    assert elapsed < 0.5, "a request with nothing else queued or announced must not wait 2 s"


def test_concurrent_requests_share_a_forward_pass_and_keep_their_rows():
    fake = FakeModel(delay_s=0.05)
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=0.0, queue_limit=64)

    async def many():
        return await asyncio.gather(*(batcher.submit([image(i)]) for i in range(20)))

    results = run(many, batcher)
    ids = [r[0].value[0] for r in results]
    assert ids == list(range(20)), "each request must get its own row back"
    assert max(fake.batch_sizes) > 1
    assert max(fake.batch_sizes) <= 8
    assert sum(fake.batch_sizes) == 20


def test_waits_for_announced_requests_up_to_max_wait():
    fake = FakeModel()
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=1.0, queue_limit=64)

    async def announced_then_late():
        batcher.expect(2)
        first = asyncio.create_task(batcher.submit([image(1)], announced=1))
        await asyncio.sleep(0.05)  # the second one is still "decoding"
        second = await batcher.submit([image(2)], announced=1)
        return await first, second

    first, second = run(announced_then_late, batcher)
    assert first[0].batch_size == 2 and second[0].batch_size == 2
    assert fake.batch_sizes == [2]


def test_withdrawn_announcement_stops_the_wait():
    fake = FakeModel()
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=5.0, queue_limit=64)

    async def announced_then_withdrawn():
        batcher.expect(2)
        started = time.perf_counter()
        task = asyncio.create_task(batcher.submit([image(1)], announced=1))
        await asyncio.sleep(0.05)
        batcher.withdraw(1)  # its decode failed: nobody else is coming
        await task
        return time.perf_counter() - started

    assert run(announced_then_withdrawn, batcher) < 2.0


def test_full_queue_refuses_new_work():
    gate = threading.Event()
    fake = FakeModel(gate=gate)
    batcher = MicroBatcher(fake, max_batch_size=1, max_wait_s=0.0, queue_limit=2)

    async def overfill():
        running = asyncio.create_task(batcher.submit([image(0)]))
        await asyncio.to_thread(fake.entered.wait, 5)  # item 0 is in the forward pass
        queued = [asyncio.create_task(batcher.submit([image(i)])) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert batcher.queue_depth == 2
        with pytest.raises(QueueFullError):
            batcher.check_capacity(1)
        with pytest.raises(QueueFullError):
            await batcher.submit([image(3)])
        gate.set()
        done = await asyncio.gather(running, *queued)
        return [d[0].value[0] for d in done]

    assert run(overfill, batcher) == [0, 1, 2]


def test_model_failure_fails_that_batch_only():
    calls = []

    def flaky(items: list[torch.Tensor]) -> list[np.ndarray]:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [np.zeros(2, dtype=np.float32) for _ in items]

    batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_s=0.0, queue_limit=8)

    async def twice():
        with pytest.raises(BatchFailedError, match="boom"):
            await batcher.submit([image(1)])
        return await batcher.submit([image(2)])

    (result,) = run(twice, batcher)
    assert result.value.shape == (2,)


def test_thread_setup_failure_surfaces_from_start():
    batcher = MicroBatcher(FakeModel(), max_batch_size=1, max_wait_s=0.0, queue_limit=1)

    def broken_setup() -> None:
        raise RuntimeError("warm-up failed")

    async def start():
        await batcher.start(thread_setup=broken_setup)

    with pytest.raises(RuntimeError, match="warm-up failed"):
        asyncio.run(start())


def test_several_workers_run_batches_side_by_side():
    # The first two batches wait for each other inside `process`: only possible when they run
    # at once. With one worker the barrier times out and the requests fail.
    barrier = threading.Barrier(2, timeout=10)
    calls = itertools.count()
    threads_seen: set[str] = set()

    def process(items: list[torch.Tensor]) -> list[int]:
        threads_seen.add(threading.current_thread().name)
        if next(calls) < 2:
            barrier.wait()
        return [int(t[0, 0, 0]) for t in items]

    batcher = MicroBatcher(process, max_batch_size=1, max_wait_s=0.0, queue_limit=16)

    async def main():
        await batcher.start(workers=2)
        try:
            results = await asyncio.gather(*(batcher.submit([image(i)]) for i in range(6)))
        finally:
            batcher.stop()
        return [r[0].value for r in results]

    assert asyncio.run(main()) == list(range(6))
    assert threads_seen == {"inference-0", "inference-1"}


def test_requests_cancelled_while_queued_do_not_kill_the_worker():
    # A worker that takes only cancelled items used to index batch[0] of an empty list and die,
    # leaving later requests waiting forever.
    gate = threading.Event()
    fake = FakeModel(gate=gate)
    batcher = MicroBatcher(fake, max_batch_size=4, max_wait_s=0.0, queue_limit=16)

    async def cancel_queued_then_submit():
        running = asyncio.create_task(batcher.submit([image(0)]))
        await asyncio.to_thread(fake.entered.wait, 5)  # the worker is busy with item 0
        queued = [asyncio.create_task(batcher.submit([image(i)])) for i in (1, 2, 3)]
        await asyncio.sleep(0.02)
        for task in queued:
            task.cancel()  # e.g. request timeout or client gone, while queued
        await asyncio.gather(*queued, return_exceptions=True)
        gate.set()
        await running
        await asyncio.sleep(0.05)  # the worker now takes the cancelled items: an empty batch
        assert batcher.dead_workers() == []
        (later,) = await asyncio.wait_for(batcher.submit([image(9)]), 5)
        return later

    later = run(cancel_queued_then_submit, batcher)
    assert later.value[0] == 9
    assert sum(fake.batch_sizes) == 2, "cancelled items never reach the model"


def test_stop_finishes_what_is_queued():
    gate = threading.Event()
    fake = FakeModel(gate=gate)
    batcher = MicroBatcher(fake, max_batch_size=2, max_wait_s=0.0, queue_limit=16)

    async def main():
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit([image(i)])) for i in range(5)]
        await asyncio.to_thread(fake.entered.wait, 5)
        stopping = asyncio.create_task(asyncio.to_thread(batcher.stop, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError, match="shutting down"):
            await batcher.submit([image(99)])  # no new work once stopping
        gate.set()
        await stopping
        return [r[0].value[0] for r in await asyncio.gather(*tasks)]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert sum(fake.batch_sizes) == 5


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_worker_answers_its_batch_is_reported_and_restarted():
    calls = itertools.count()

    def dies_once(items: list[torch.Tensor]) -> list[int]:
        if next(calls) == 0:
            raise SystemExit("a BaseException ends the thread")
        return [int(t[0, 0, 0]) for t in items]

    batcher = MicroBatcher(dies_once, max_batch_size=1, max_wait_s=0.0, queue_limit=8)

    async def main():
        await batcher.start(workers=1)
        try:
            with pytest.raises(BatchFailedError, match="worker died"):
                await asyncio.wait_for(batcher.submit([image(1)]), 5)
            for _ in range(50):  # the thread ends just after answering its batch
                if batcher.dead_workers():
                    break
                await asyncio.sleep(0.01)
            assert batcher.dead_workers() == [0]
            await batcher.restart_worker(0)
            assert batcher.dead_workers() == []
            return await asyncio.wait_for(batcher.submit([image(2)]), 5)
        finally:
            batcher.stop()

    (result,) = asyncio.run(main())
    assert result.value == 2


class AloneContext:
    """A ``run_alone`` context factory that records which thread entered it, and when."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.inside = threading.local()

    def __call__(self):
        import contextlib

        @contextlib.contextmanager
        def context():
            self.entered.append(threading.current_thread().name)
            self.inside.flag = True
            try:
                yield
            finally:
                self.inside.flag = False

        return context()


def test_a_lone_batch_runs_alone_and_holds_the_other_workers_back():
    alone = AloneContext()
    gate = threading.Event()
    seen: list[tuple[int, bool]] = []

    def process(items: list[torch.Tensor]) -> list[int]:
        seen.append((len(items), getattr(alone.inside, "flag", False)))
        if len(seen) == 1:
            assert gate.wait(10)
        return [int(t[0, 0, 0]) for t in items]

    batcher = MicroBatcher(
        process, max_batch_size=8, max_wait_s=0.0, queue_limit=16, run_alone=alone
    )

    async def main():
        await batcher.start(workers=2)
        try:
            first = asyncio.create_task(batcher.submit([image(1)]))
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.005)
            # While the lone batch runs, the other (idle) worker must not take new work...
            later = [asyncio.create_task(batcher.submit([image(i)])) for i in (2, 3)]
            await asyncio.sleep(0.1)
            assert len(seen) == 1, "a worker took a batch while another ran alone"
            gate.set()
            # ...which then goes in one batch after it (alone again: nothing else is left).
            results = [r[0].value for r in await asyncio.gather(first, *later)]
            return results
        finally:
            batcher.stop()

    assert asyncio.run(main()) == [1, 2, 3]
    assert seen[0] == (1, True)
    assert seen[1] == (2, True), "the held-back items go together, in the next batch"
    assert batcher._busy == 0 and not batcher._alone


def test_a_batch_runs_on_its_share_while_another_worker_is_busy():
    alone = AloneContext()
    gate = threading.Event()
    flags: list[bool] = []

    def process(items: list[torch.Tensor]) -> list[int]:
        flags.append(getattr(alone.inside, "flag", False))
        if int(items[0][0, 0, 0]) == 1:
            assert gate.wait(10)
        return [int(t[0, 0, 0]) for t in items]

    batcher = MicroBatcher(
        process, max_batch_size=1, max_wait_s=0.0, queue_limit=16, run_alone=alone
    )

    async def main():
        await batcher.start(workers=2)
        try:
            first = asyncio.create_task(batcher.submit([image(1)]))
            second = asyncio.create_task(batcher.submit([image(2)]))  # queued: 1 not alone
            (two,) = await asyncio.wait_for(second, 5)
            gate.set()
            (one,) = await first
            return one.value, two.value
        finally:
            batcher.stop()

    assert asyncio.run(main()) == (1, 2)
    assert flags == [False, False], "with work queued or running, no batch borrows threads"


def test_one_worker_never_runs_alone():
    alone = AloneContext()
    batcher = MicroBatcher(
        FakeModel(), max_batch_size=4, max_wait_s=0.0, queue_limit=8, run_alone=alone
    )

    async def main():
        await batcher.start(workers=1)
        try:
            return await batcher.submit([image(5)])
        finally:
            batcher.stop()

    (result,) = asyncio.run(main())
    assert result.value[0] == 5
    assert alone.entered == [], "a single worker already has every thread"
