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
