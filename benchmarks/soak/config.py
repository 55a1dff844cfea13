"""Everything a soak run is parametrised by, with the defaults of the full run (issue 8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.soak.mix import DEFAULT_MIX
from benchmarks.soak.payloads import DEFAULT_CORPUS


@dataclass
class SoakConfig:
    out: Path
    duration_s: float = 600.0  # the open-loop overload phase
    checkpoint: Path | None = None  # None: build the demo checkpoint into ``out``
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the service
    corpus: str = DEFAULT_CORPUS
    photo_dir: Path | None = None  # real JPEGs instead of the corpus's synthetic photos
    photo_count: int = 16
    phone_count: int = 4
    warmup_s: float = 3.0  # unmeasured closed loop right after ready
    capacity_seconds: float = 30.0
    capacity_concurrency: int = 16
    starvation_seconds: float = 20.0  # each of the unloaded and loaded halves
    starvation_max_requests: int = 5000
    starvation_expensive: tuple[str, ...] = ()  # corpus names; default: its first two
    starvation_target: float = 2.0  # p99 loaded / unloaded
    rate_factor: float = 2.0  # open-loop rate = this x measured capacity ...
    rate: float | None = None  # ... unless given in requests/s
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 8
    max_inflight: int = 512
    client: str = "http1"  # transport: http1 (benchmarks.soak.http1) or httpx, to cross-check
    request_timeout_s: float = 60.0
    ready_timeout_s: float = 300.0
    idle_wait_s: float = 60.0  # longest wait for the server to go quiet between phases
    rss_warmup_s: float = 30.0
    rss_window_s: float = 60.0
    max_arrivals: int = 1_000_000

    def as_json(self) -> dict:
        return {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in self.__dict__.items()
            if key != "out"
        } | {"out": str(self.out)}
