"""Everything a run is parametrised by, with the defaults of the full run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.serving.fixtures import DEFAULT_PHOTO_DIR

SERVERS = ("ours", "litserve", "naive")
# photo-raw: the same 800x600 photos sent as the body itself (Content-Type: image/jpeg), which
# only our service takes; the others are measured on multipart only
PAYLOAD_KINDS = ("photo", "phone", "photo-raw")


@dataclass
class RunConfig:
    out: Path
    arch: str = "resnet18"
    input_size: int = 224
    concurrency: tuple[int, ...] = (1, 8, 32)
    duration_s: float = 15.0
    warmup_s: float = 3.0
    payload_kinds: tuple[str, ...] = ("photo", "phone")
    photo_dir: Path = DEFAULT_PHOTO_DIR
    photo_count: int = 16
    servers: tuple[str, ...] = SERVERS
    ceiling_batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32)
    ceiling_seconds: float = 4.0
    ceiling_decode_threads: int = 1  # the tight loop decodes in line; GPU hosts use a pool
    # Also run the loop in this many threads at once (the service's CPU inference workers).
    ceiling_parallel_loops: tuple[int, ...] = (1, 2)
    # The ceiling runs the engine our service runs (INVASIVE_ENGINE of service_env or of this
    # environment, else auto); eager PyTorch is measured too, at these batch sizes, for context
    # (empty: not measured).
    ceiling_eager_batch_sizes: tuple[int, ...] = (1, 16)
    # Also decode the JPEGs on the model's device in the ceiling loop (as the service does on
    # CUDA, INVASIVE_JPEG_DECODE=batch); the ceiling is the best of both ways.
    ceiling_decode_on_device: bool = False
    device: str = "auto"
    precision: str = "auto"
    # None: our service's own defaults (read from app.config), passed to LitServe as well so
    # both batch alike; a value is passed to both.
    max_batch_size: int | None = None
    batch_wait_ms: float | None = None
    service_env: dict[str, str] = field(default_factory=dict)  # extra INVASIVE_* for ours
    # name -> extra INVASIVE_* settings: our service again, measured right after "ours"
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    litserve_workers: int = 0  # 0: one per core, as LitServe's docs advise for CPU
    # wrk's threads: one leaves the most CPU to the server on a small box; thousands of uploads
    # a second (GPU hosts) need more than one thread can write
    wrk_threads: int = 1
    max_cell_s: float = 45.0  # slow servers get longer cells, up to this (see cell_duration)
    request_timeout_s: float = 60.0
    ready_timeout_s: float = 300.0

    def server_order(self) -> list[str]:
        """``servers`` with each variant measured right after ``ours`` (or first without it)."""
        order = [name for name in self.servers if name not in self.variants]
        at = order.index("ours") + 1 if "ours" in order else 0
        return order[:at] + list(self.variants) + order[at:]

    def batch_settings(self) -> tuple[int, float]:
        """(max batch size, max wait in ms) that every batching server gets."""
        size, wait = self.max_batch_size, self.batch_wait_ms
        if size is None or wait is None:
            default_size, default_wait = service_batch_defaults()
            size = default_size if size is None else size
            wait = default_wait if wait is None else wait
        return size, wait

    def cell_duration(self, concurrency: int, per_request_s: float | None) -> float:
        """Seconds to measure a cell: long enough for a slow server to finish several rounds.

        ``per_request_s``: seconds per answer measured at a lower concurrency. A server that
        handles one request at a time answers ``concurrency`` requests per ``concurrency *
        per_request_s``; wrk only counts answers that arrive before it stops, so a cell shorter
        than a few such rounds under-counts (or counts nothing at all).
        """
        if per_request_s is None:
            return self.duration_s
        needed = 3 * concurrency * per_request_s
        return max(self.duration_s, min(self.max_cell_s, needed))

    def service_engine(self) -> str:
        """The INVASIVE_ENGINE our service runs with in this run (auto unless set)."""
        return self.service_env.get("INVASIVE_ENGINE") or os.environ.get(
            "INVASIVE_ENGINE", "auto"
        )

    def litserve_worker_count(self) -> int:
        return self.litserve_workers or os.cpu_count() or 1


def service_batch_defaults() -> tuple[int, float]:
    """The service's own max_batch_size / max_batch_wait_ms defaults, or 16 / 5 ms without app/."""
    try:
        from app.config import Settings
    except ImportError:
        return 16, 5.0
    fields = Settings.model_fields
    return int(fields["max_batch_size"].default), float(fields["max_batch_wait_ms"].default)
