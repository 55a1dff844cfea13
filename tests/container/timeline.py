"""Where the container test's time goes: every slow step is recorded and printed at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_STEPS: list[tuple[str, float]] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time one step (a build, a compose command, a wait) under ``name``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        _STEPS.append((name, seconds))
        print(f"[container-test] {seconds:7.1f} s  {name}", flush=True)


def report() -> list[str]:
    """One line per recorded step, then the total."""
    lines = [f"{seconds:7.1f} s  {name}" for name, seconds in _STEPS]
    lines.append(f"{sum(s for _, s in _STEPS):7.1f} s  total of the steps above")
    return lines
