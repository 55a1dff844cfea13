"""Large requests hand the heap memory they freed back to the operating system."""

from __future__ import annotations

import asyncio

from app import memory
from app.admission import MemoryBudget


def test_the_heap_is_trimmed_after_a_large_request_only(monkeypatch):
    trims = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: trims.append)
    monkeypatch.setattr(memory, "TRIM_DELAY_S", 0.01)

    async def request(held: int) -> None:
        async with MemoryBudget(1 << 30, wait_s=0).charge() as charge, memory.trimmed_after(charge):
            await charge.add(held)
            charge.give_back(held)  # an image's decode memory, back early: the peak counts
        await asyncio.sleep(0.2)

    asyncio.run(request(memory.TRIM_AFTER_BYTES - 1))
    assert trims == []
    asyncio.run(request(memory.TRIM_AFTER_BYTES))
    assert trims == [0]
