"""The memory budget on its own: charge, wait, first-fit, refuse, and never leak a byte."""

from __future__ import annotations

import asyncio

import pytest

from app.admission import MemoryBudget
from app.errors import ApiError


def run(coro):
    return asyncio.run(coro)


def test_charges_add_up_and_are_given_back_when_the_request_ends():
    budget = MemoryBudget(1000, wait_s=0.1)

    async def main():
        async with budget.charge() as a, budget.charge() as b:
            await a.add(300)
            await b.add(500)
            assert budget.in_use == 800
            a.give_back(100)
            assert (budget.in_use, a.held) == (700, 200)
        return budget.in_use, budget.peak

    assert run(main()) == (0, 800)


def test_work_that_does_not_fit_waits_for_memory_to_come_back():
    budget = MemoryBudget(1000, wait_s=2.0)

    async def main():
        hog = budget.charge()
        await hog.add(900)
        waiter = asyncio.create_task(budget.charge().add(500))
        await asyncio.sleep(0.05)
        assert not waiter.done() and budget.in_use == 900
        hog.give_back(900)
        await asyncio.wait_for(waiter, 1)
        return budget.in_use

    assert run(main()) == 500


def test_small_work_goes_ahead_of_a_large_waiter():
    budget = MemoryBudget(1000, wait_s=1.0)

    async def main():
        hog = budget.charge()
        await hog.add(600)
        big = asyncio.create_task(budget.charge().add(600))  # waits: 600 + 600 > 1000
        await asyncio.sleep(0.01)
        small = budget.charge()
        await asyncio.wait_for(small.add(100), 0.1)  # fits now: does not queue behind `big`
        assert not big.done()
        hog.give_back(600)
        small.give_back(100)
        await asyncio.wait_for(big, 1)
        return budget.in_use

    assert run(main()) == 600


def test_no_room_within_the_wait_is_503_with_retry_after_and_leaks_nothing():
    budget = MemoryBudget(1000, wait_s=0.05)

    async def main():
        hog = budget.charge()
        await hog.add(990)
        with pytest.raises(ApiError) as err:
            async with budget.charge() as late:
                await late.add(20)
        hog.give_back(990)
        return err.value, budget.in_use, budget._waiters

    err, in_use, waiters = run(main())
    assert (err.status, err.code, err.headers) == (503, "at_capacity", {"Retry-After": "1"})
    assert in_use == 0 and not waiters


def test_what_can_never_fit_is_413_at_once():
    budget = MemoryBudget(1000, wait_s=5.0)

    async def main():
        charge = budget.charge()
        await charge.add(600)
        with pytest.raises(ApiError) as err:
            await asyncio.wait_for(charge.add(500, "decoding this image", "image_too_large"), 1)
        return err.value

    err = run(main())
    assert (err.status, err.code) == (413, "image_too_large")
    assert "memory budget" in err.message


def test_a_cancelled_waiter_leaves_no_charge_behind():
    budget = MemoryBudget(1000, wait_s=5.0)

    async def main():
        hog = budget.charge()
        await hog.add(900)
        waiter = asyncio.create_task(budget.charge().add(500))
        await asyncio.sleep(0.01)
        waiter.cancel()  # e.g. the client went away
        await asyncio.gather(waiter, return_exceptions=True)
        hog.give_back(900)
        return budget.in_use, len(budget._waiters)

    assert run(main()) == (0, 0)


def test_a_request_s_waits_add_up_to_one_wait_in_all():
    """An upload charged chunk by chunk, each chunk granted just in time, is refused once its
    waits add up to ``wait_s``: a wait per chunk let a 16 MB upload take over a minute."""
    budget = MemoryBudget(1000, wait_s=0.3)

    async def main():
        hog = budget.charge()
        await hog.add(1000)
        upload = budget.charge()
        started = asyncio.get_running_loop().time()
        chunks = 0
        with pytest.raises(ApiError) as refused:
            while True:  # each chunk gets room after 0.1 s, when the hog gives some back
                asyncio.get_running_loop().call_later(0.1, hog.give_back, 100)
                await upload.add(100)
                chunks += 1
        elapsed = asyncio.get_running_loop().time() - started
        held = upload.held
        await upload.__aexit__(None, None, None)
        return chunks, elapsed, held, refused.value, budget.in_use - hog.held

    chunks, elapsed, held, error, leaked = run(main())
    assert chunks in (2, 3)  # 0.1 s each, then the third or fourth wait crosses 0.3 s in all
    assert elapsed < 1.0  # about 0.3 s: stopped, not granted chunk after chunk
    assert held == chunks * 100
    assert (error.status, error.code) == (503, "at_capacity")
    assert "s for room in all" in error.message
    assert leaked == 0


def test_room_that_is_free_needs_no_wait_even_after_the_waits_are_spent():
    budget = MemoryBudget(1000, wait_s=0.05)

    async def main():
        hog = budget.charge()
        await hog.add(1000)
        request = budget.charge()
        with pytest.raises(ApiError):
            await request.add(10)  # waits 0.05 s: spent
        hog.give_back(500)
        await request.add(10)  # fits at once: granted, no waiting needed
        return request.held

    assert run(main()) == 10


def test_requests_that_wait_for_each_other_the_later_gives_way_at_once():
    """Each holds 450 of 1000 and needs 200 more: neither could ever get it while the other
    holds on. The later request is refused at once (503, retryable); the earlier goes on."""
    budget = MemoryBudget(1000, wait_s=5.0)

    async def request(hold, started):
        async with budget.charge() as charge:
            await charge.add(hold)
            await asyncio.sleep(0.01)  # both hold before either asks for more
            try:
                await charge.add(200)
            except ApiError as exc:
                return exc, asyncio.get_running_loop().time() - started
            return charge.held, asyncio.get_running_loop().time() - started

    async def main():
        started = asyncio.get_running_loop().time()
        return await asyncio.gather(request(450, started), request(450, started))

    (first, _), (later, later_s) = run(main())
    assert first == 650
    assert (later.status, later.code) == (503, "at_capacity") and "gave way" in later.message
    assert later_s < 1.0


def test_the_latest_requests_give_way_only_as_many_as_needed():
    """Four holders of 240 each wait for 300 more in a budget of 1000. Without the latest,
    720 + 300 still cannot fit, so the third gives way too; then 480 + 300 can. The first
    two go on, one after the other."""
    budget = MemoryBudget(1000, wait_s=5.0)

    async def request(i):
        async with budget.charge() as charge:
            await charge.add(240)
            await asyncio.sleep(0.01)
            try:
                await charge.add(300)
            except ApiError:
                return i, "gave way"
            await asyncio.sleep(0.01)
            return i, "scored"

    async def main():
        outcomes = await asyncio.gather(*(request(i) for i in range(4)))
        return outcomes, budget.in_use, budget.gave_way, len(budget._waiters)

    outcomes, in_use, gave_way, waiters = run(main())
    assert outcomes == [(0, "scored"), (1, "scored"), (2, "gave way"), (3, "gave way")]
    assert (in_use, gave_way, waiters) == (0, 2, 0)


def test_bytes_that_come_back_by_themselves_do_not_make_a_request_give_way():
    """A request whose image is decoding in a decode process (``returning``) will have that
    memory back whatever it waits for: no cycle, so nobody gives way; the waiter is granted
    once the decode is done."""
    budget = MemoryBudget(1000, wait_s=5.0)

    async def main():
        first, later = budget.charge(), budget.charge()
        await first.add(400)  # upload
        await first.add(300, returning=True)  # a decode under way in a process
        await later.add(250)
        first_waits = asyncio.create_task(first.add(300))  # stuck 650 + 300 fits: no cycle
        later_waits = asyncio.create_task(later.add(100))
        await asyncio.sleep(0.02)
        assert budget.gave_way == 0 and not first_waits.done()
        first.give_back(300, returning=True)  # the decode is done
        await asyncio.wait_for(first_waits, 1)
        later_waits.cancel()
        await asyncio.gather(later_waits, return_exceptions=True)
        held = first.held, first.returning
        for charge in (first, later):
            await charge.__aexit__(None, None, None)
        return budget.gave_way, held, budget.in_use

    assert run(main()) == (0, (700, 0), 0)


def test_a_running_holder_is_waited_for_not_given_way_to():
    """Whoever holds the room without waiting will give it back: that is an ordinary wait
    (503 only after the admission wait), not a cycle."""
    budget = MemoryBudget(1000, wait_s=0.2)

    async def main():
        running = budget.charge()
        await running.add(900)
        waiting = budget.charge()
        await waiting.add(50)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApiError) as refused:
            await waiting.add(100)
        return refused.value, asyncio.get_running_loop().time() - started, budget.gave_way

    error, waited, gave_way = run(main())
    assert error.code == "at_capacity" and "gave way" not in error.message
    assert waited >= 0.19 and gave_way == 0


# -- the reserve: room on top of the budget that heavy decodes may not use -----------------


def test_heavy_decodes_fill_the_budget_at_most_and_the_reserve_is_for_the_rest():
    budget = MemoryBudget(1000, wait_s=1.0, reserve_bytes=200)

    async def main():
        first, second = budget.charge(), budget.charge()
        await first.add(900, heavy=True)  # the largest heavy decode is still the budget's
        blocked = asyncio.create_task(second.add(150, heavy=True))  # 1050 > 1000
        await asyncio.sleep(0.05)
        assert not blocked.done()
        ordinary = budget.charge()
        await asyncio.wait_for(ordinary.add(250), 0.1)  # into the reserve, at once
        assert not blocked.done() and budget.in_use == 1150
        ordinary.give_back(250)
        await asyncio.sleep(0.05)
        assert not blocked.done(), "a heavy waiter was granted room in the reserve"
        first.give_back(900, heavy=True)
        await asyncio.wait_for(blocked, 1)
        return budget.in_use

    assert run(main()) == 150


def test_ordinary_bytes_take_room_from_heavy_decodes_only_beyond_the_reserve():
    budget = MemoryBudget(1000, wait_s=0.2, reserve_bytes=200)

    async def main():
        async with budget.charge() as upload, budget.charge() as big:
            await upload.add(150)  # within the reserve
            await big.add(1000, heavy=True)  # the whole budget, beside it
            big.give_back(1000, heavy=True)
            await upload.add(150)  # now 100 beyond the reserve
            with pytest.raises(ApiError) as err:
                await big.add(1000, heavy=True)
            assert (budget.in_use, budget.heavy_in_use) == (300, 0)
        return err.value, budget.in_use, budget.heavy_in_use

    err, in_use, heavy_in_use = run(main())
    assert (err.status, err.code, in_use, heavy_in_use) == (503, "at_capacity", 0, 0)


def test_over_the_budget_is_413_for_a_heavy_decode_and_over_budget_and_reserve_for_the_rest():
    budget = MemoryBudget(1000 * 1024 * 1024, wait_s=1.0, reserve_bytes=125 * 1024 * 1024)

    async def main():
        with pytest.raises(ApiError) as heavy:
            async with budget.charge() as charge:
                await charge.add(1001 * 1024 * 1024, "decoding this image", "image_too_large",
                                 heavy=True)
        async with budget.charge() as charge:
            await charge.add(1100 * 1024 * 1024)  # ordinary bytes may use the reserve too
            with pytest.raises(ApiError) as ordinary:
                await charge.add(26 * 1024 * 1024)
        return heavy.value, ordinary.value, budget.in_use

    heavy, ordinary, in_use = run(main())
    assert (heavy.status, heavy.code, ordinary.status, in_use) == (413, "image_too_large", 413, 0)
    assert "1000.0 MiB (INVASIVE_MEMORY_BUDGET_MB)" in heavy.message
    assert "INVASIVE_MEMORY_RESERVE_PERCENT" in ordinary.message


def test_a_heavy_waiter_that_only_the_reserve_could_hold_gives_way():
    # Both requests hold ordinary bytes (uploads) and wait for each other: the earlier for a
    # heavy decode, which fits once the later's bytes are gone, the later for ordinary room.
    budget = MemoryBudget(800, wait_s=2.0, reserve_bytes=200)

    async def main():
        early, late = budget.charge(), budget.charge()
        await early.add(400)
        await late.add(400)  # 800 ordinary bytes: 600 beyond the reserve
        heavy = asyncio.create_task(early.add(300, heavy=True))  # 300 + 600 > 800: waits
        await asyncio.sleep(0.02)

        async def late_request():
            async with late:  # gives back its 400 when it ends
                await late.add(500)  # 1300 > 1000: each waits for the other

        light = asyncio.create_task(late_request())
        results = await asyncio.wait_for(
            asyncio.gather(heavy, light, return_exceptions=True), 1
        )
        return results, budget.gave_way, late.gave_way

    (heavy, light), gave_way, late_gave_way = run(main())
    assert heavy is None and isinstance(light, ApiError) and light.status == 503
    assert (gave_way, late_gave_way) == (1, True)


def test_each_request_s_wait_for_room_is_reported_when_it_ends():
    waits: list[float] = []
    budget = MemoryBudget(1000, wait_s=2.0, on_waited=waits.append)

    async def main():
        hog = budget.charge()
        await hog.add(900)
        async with budget.charge() as quick:
            await quick.add(50)

        async def waiting():
            async with budget.charge() as slow:
                await slow.add(500)

        task = asyncio.create_task(waiting())
        await asyncio.sleep(0.2)
        hog.give_back(900)
        await asyncio.wait_for(task, 1)

    run(main())
    assert waits[0] == 0.0 and 0.15 < waits[1] < 1.0
