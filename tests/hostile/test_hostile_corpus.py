"""The service against its hostile corpus, over real HTTP, in a real process.

1. Every corpus case (files a phone, a tool or an attacker sends; requests broken on purpose)
   gets its documented status and error code, never a 5xx, and the service stays live and ready
   after each; its log has no traceback at the end.
2. Starvation: while costly-but-valid images are decoded back to back from two threads,
   ordinary photos sent one after another are each answered within a stall bound.
3. Memory: with heavy images and large batches in flight, the service's process tree grows by
   no more than its memory budget plus a stated slack for the decode processes.

Each test prints where its time went (run with ``-s`` to see it).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.hostile import files as corpus_files
from tests.hostile.corpus import API_KEY, Case, cases, expensive_files, ordinary_photo
from tests.hostile.rawhttp import build, exchange
from tests.hostile.server import RunningService, process_count, rss_tree_bytes, running_service

CASES = cases()

# Corpus server: small decode budget so a decode that runs away is cut quickly, no drain wait.
CORPUS_SETTINGS = {
    "api_key": API_KEY,
    "decode_timeout_s": "2",
    "drain_seconds": "0",
    "max_batch_size": "4",
}
# Not a speed claim. Ordinary photos have the memory budget's reserve, which heavy decodes may
# not use, so they never wait for memory (asserted from each answer's timing.memory_wait_ms);
# before the reserve a photo could wait up to the admission wait (INVASIVE_ADMISSION_WAIT_S) and
# answered 200 after 2.04 s on a slow day (CI, 2026-11-28). The time bound stays a backstop:
# beyond the wait plus a second to score it, a photo is stuck behind the work itself (before
# the decode lanes, behind a heavy decode's queue: tens of seconds).
ADMISSION_WAIT_S = 2.0
STALL_BOUND_S = ADMISSION_WAIT_S + 1.0
STARVATION_LOAD_S = 10.0
MEMORY_BUDGET_MB = 400
# The process tree's growth over idle must stay within the budget itself: heavy-lane decode
# processes are replaced after each image and the light lane's decoders return freed buffers,
# so what the budget counts (uploads + each decode's estimate) bounds the real growth.
MEMORY_LOAD_S = 8.0
MB = 1024 * 1024
LOAD_REQUEST_TIMEOUT_S = 30.0  # one load request; a service that takes longer fails anyway
LOAD_DRAIN_S = 20.0  # after the load stops, how long its last requests may still take


@pytest.fixture(scope="module")
def corpus_service(demo_checkpoint: Path) -> Iterator[RunningService]:
    started = time.monotonic()
    with running_service(demo_checkpoint, **CORPUS_SETTINGS) as service:
        print(f"\ncorpus server ready in {time.monotonic() - started:.1f} s (pid {service.pid})")
        yield service


def _health(port: int) -> tuple[int | None, int | None]:
    close = [("Connection", "close")]
    live = exchange(port, build("GET", "/health/live", close), timeout=5).status
    ready = exchange(port, build("GET", "/health/ready", close), timeout=5).status
    return live, ready


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(corpus_service: RunningService, case: Case) -> None:
    started = time.monotonic()
    request = case.make_request()
    built = time.monotonic()
    response = exchange(corpus_service.port, request, timeout=case.timeout_s)
    answered = time.monotonic()
    live, ready = _health(corpus_service.port)
    print(
        f"\n{case.name}: build {built - started:.2f} s, answer {answered - built:.2f} s "
        f"({response.status} {response.error_code}), health {time.monotonic() - answered:.2f} s"
    )
    assert corpus_service.alive(), f"the service died on {case.name}:\n{corpus_service.log_tail()}"
    problem = case.check(response)
    assert problem is None, f"{case.name} ({case.description}): {problem}"
    assert (live, ready) == (200, 200), f"after {case.name}: live={live} ready={ready}"


def test_corpus_server_log_has_no_traceback(corpus_service: RunningService) -> None:
    log = corpus_service.log()
    print(f"\ncorpus server log: {len(log.splitlines())} lines")
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) :][:6000]


# -- load helpers ---------------------------------------------------------------------------


class InFlight:
    """Counts requests in flight across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __enter__(self) -> None:
        with self.lock:
            self.count += 1

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.count -= 1


def _post(client: httpx.Client, path: str, parts: list, in_flight: InFlight | None = None):
    """(status or None, error code or None, seconds, Retry-After present)."""
    started = time.monotonic()
    try:
        if in_flight is None:
            response = client.post(path, files=parts)
        else:
            with in_flight:
                response = client.post(path, files=parts)
    except httpx.HTTPError as exc:
        return None, type(exc).__name__, time.monotonic() - started, False
    code = None
    if response.status_code != 200:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "<not json>"
    return response.status_code, code, time.monotonic() - started, "retry-after" in response.headers


def _load_thread(
    base_url: str,
    stop: threading.Event,
    max_requests: int,
    make: Callable[[int], tuple],
    log: list,
    in_flight: InFlight | None = None,
) -> threading.Thread:
    """A thread that sends ``make(i)`` -> (label, path, parts) until ``stop`` or the count."""

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=LOAD_REQUEST_TIMEOUT_S) as client:
            for i in range(max_requests):
                if stop.is_set():
                    return
                label, path, parts = make(i)
                log.append((label, *_post(client, path, parts, in_flight)))

    return threading.Thread(target=run, daemon=True)


def _join_all(threads: list[threading.Thread]) -> None:
    """Wait for the load threads' last requests, at most ``LOAD_DRAIN_S`` in all (a stuck
    service must fail the test, not hang it; the daemon threads die with the service)."""
    deadline = time.monotonic() + LOAD_DRAIN_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _bad_answers(log: list) -> list:
    """Answers no load may get: none, 5xx other than 503, a 503 without Retry-After."""
    return [
        entry
        for entry in log
        if entry[1] is None or (entry[1] >= 500 and (entry[1] != 503 or not entry[4]))
    ]


def _summary(log: list) -> str:
    counts = Counter((label, status, code) for label, status, code, *_ in log)
    return ", ".join(
        f"{label}: {status} {code or ''} x{n}"
        for (label, status, code), n in sorted(counts.items(), key=str)
    )


def _file(name: str, data: bytes, field: str = "file") -> tuple:
    kind = "image/png" if name.startswith("png") else "image/jpeg"
    return (field, (name, data, kind))


# -- starvation -----------------------------------------------------------------------------


def test_costly_images_do_not_stall_ordinary_photos(demo_checkpoint: Path) -> None:
    started = time.monotonic()
    heavy = expensive_files()
    photos = [ordinary_photo(100 + i) for i in range(20)]
    built = time.monotonic()
    heavy_log: list = []
    small: list[tuple[float, int | None, bool]] = []
    memory_waits: list[float] = []
    in_flight = InFlight()
    stop = threading.Event()
    rotations = [
        ["png_16bit_3500x3500", "jpeg_progressive_8000x6000", "png_rgb_6500x6500"],
        ["png_1x12000000", "png_16bit_3500x3500"],
    ]
    with running_service(
        demo_checkpoint, drain_seconds="0", max_batch_size="4",
        admission_wait_s=str(ADMISSION_WAIT_S),
    ) as service:
        ready = time.monotonic()

        def one_of(rotation: list[str]) -> Callable[[int], tuple]:
            def make(i: int) -> tuple:
                name = rotation[i % len(rotation)]
                return name, "/v1/predict", [_file(name, heavy[name])]

            return make

        threads = [
            _load_thread(service.base_url, stop, 40, one_of(rotation), heavy_log, in_flight)
            for rotation in rotations
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # let both heavy streams start decoding
        with httpx.Client(base_url=service.base_url, timeout=10) as client:
            deadline = time.monotonic() + STARVATION_LOAD_S
            while time.monotonic() < deadline and len(small) < 400:
                busy = in_flight.count > 0
                sent = time.monotonic()
                response = client.post(
                    "/v1/predict", files=[_file("small.jpg", photos[len(small) % 20])]
                )
                small.append((time.monotonic() - sent, response.status_code, busy))
                if response.status_code == 200:
                    memory_waits.append(response.json()["timing"]["memory_wait_ms"])
        stop.set()
        _join_all(threads)
        heavy_answers = list(heavy_log)  # before the service stops: no aborted requests
        loaded = time.monotonic()
        log = service.log()
    latencies = sorted(s for s, _, _ in small)
    overlapped = sum(busy for _, _, busy in small)
    print(
        f"\nstarvation: build {built - started:.1f} s, start {ready - built:.1f} s, load "
        f"{loaded - ready:.1f} s, stop {time.monotonic() - loaded:.1f} s\n"
        f"ordinary photos: {len(small)} sent, {overlapped} while heavy work was in flight; "
        f"latency s: min {latencies[0]:.3f} median {statistics.median(latencies):.3f} "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.3f} max {latencies[-1]:.3f}\n"
        f"heavy: {_summary(heavy_answers)}\n"
        f"ordinary photos that waited for memory: {sum(w > 0 for w in memory_waits)}"
    )
    decoded = [e for e in heavy_answers if e[1] == 200 or e[2] == "decode_timeout"]
    assert len(decoded) >= 2, f"too little heavy work was decoded: {_summary(heavy_answers)}"
    assert overlapped >= len(small) // 2, "most ordinary photos ran with no heavy work in flight"
    assert all(status == 200 for _, status, _ in small), Counter(s for _, s, _ in small)
    assert latencies[-1] < STALL_BOUND_S, f"an ordinary photo took {latencies[-1]:.2f} s"
    # The reserve on top of the budget is theirs: heavy decodes never make them wait for memory
    assert max(memory_waits) == 0.0, sorted(memory_waits)[-5:]
    assert not _bad_answers(heavy_answers), _bad_answers(heavy_answers)
    assert "Traceback" not in log


# -- memory ---------------------------------------------------------------------------------


class RssSampler:
    """Samples the service's process tree RSS every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[int, int]] = []  # (bytes, processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((rss_tree_bytes(self.pid), process_count(self.pid)))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _single(name: str, files_by_name: dict[str, bytes]) -> tuple:
    return name, "/v1/predict", [_file(name, files_by_name[name])]


def _junk_batch(count: int, size: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [
        _file(f"junk{i}.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(size), "files") for i in range(count)
    ]


@pytest.mark.parametrize("reserve_percent", [0.0, 12.5])
def test_memory_stays_within_budget_under_heavy_load(
    demo_checkpoint: Path, reserve_percent: float
) -> None:
    started = time.monotonic()
    in_budget = {  # each alone fits the 400 MiB budget (~170-320 MiB by its header)
        "png_16bit_3000x3000": corpus_files.png_16bit_square(3000),
        "png_1x12000000": corpus_files.png_1xn(12_000_000),
        "png_rgb_6000x6000": corpus_files.png_rgb_square(6000),
    }
    over_budget = {  # need more than the budget: must be refused without decoding
        "png_16bit_7000x7000": corpus_files.png_16bit_7000(),
        "png_1x49999999": corpus_files.png_1x49999999(),
    }
    big_batch = [
        _file(f"b{i}.jpg", corpus_files.jpeg_progressive_48mp(), "files") for i in range(4)
    ]
    junk = _junk_batch(8, 2 * MB, 1)
    built = time.monotonic()
    log: list = []
    stop = threading.Event()
    settings = {
        "memory_budget_mb": str(MEMORY_BUDGET_MB),
        # The reserve on top of the budget is for ordinary work only; requests in flight may
        # hold budget + reserve, so that is the bound (with no reserve: the budget itself).
        # Measured on the 2-vCPU box: growth 300-324 MB without it, 384-398 MB with 12.5 %.
        "memory_reserve_percent": str(reserve_percent),
        "drain_seconds": "0",
        "max_batch_size": "4",
    }
    with running_service(demo_checkpoint, **settings) as service:
        ready = time.monotonic()
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            for i in range(3):  # warm every lane and worker before the idle reading
                _post(client, "/v1/predict", [_file("w.jpg", ordinary_photo(200 + i))])
            _post(
                client,
                "/v1/predict/batch",
                [_file(f"w{i}.jpg", ordinary_photo(210 + i), "files") for i in range(4)],
            )
        time.sleep(0.5)
        idle_samples = []
        for _ in range(5):
            idle_samples.append(rss_tree_bytes(service.pid))
            time.sleep(0.1)
        idle = statistics.median(idle_samples)
        idle_processes = process_count(service.pid)
        loads = [  # one thread each, back to back
            _single("png_16bit_3000x3000", in_budget),
            _single("png_16bit_3000x3000", in_budget),
            _single("png_1x12000000", in_budget),
            _single("png_rgb_6000x6000", in_budget),
            _single("png_16bit_7000x7000", over_budget),
            _single("png_1x49999999", over_budget),
            ("junk_batch_8x2MiB", "/v1/predict/batch", junk),
            ("jpeg_progressive_48mp_batch_x4", "/v1/predict/batch", big_batch),
        ]
        threads = [
            _load_thread(service.base_url, stop, 30, lambda i, load=load: load, log)
            for load in loads
        ]
        with RssSampler(service.pid) as sampler:
            for thread in threads:
                thread.start()
            time.sleep(MEMORY_LOAD_S)
            stop.set()
            _join_all(threads)
        answers = list(log)  # before the service stops: no aborted requests
        loaded = time.monotonic()
        service_log = service.log()
    peak, peak_processes = max(sampler.samples)
    growth_mb = (peak - idle) / MB
    limit_mb = MEMORY_BUDGET_MB * (1 + reserve_percent / 100)
    print(
        f"\nmemory: build {built - started:.1f} s, start + warm-up {ready - built:.1f} s, load "
        f"{loaded - ready:.1f} s, stop {time.monotonic() - loaded:.1f} s\n"
        f"RSS of the process tree: idle {idle / MB:.0f} MB ({idle_processes} processes), peak "
        f"{peak / MB:.0f} MB ({peak_processes} processes), growth {growth_mb:.0f} MB; limit: "
        f"the budget and its reserve, {limit_mb:.0f} MB; {len(sampler.samples)} samples\n"
        f"answers: {_summary(answers)}"
    )
    decoded = [e for e in answers if e[0] in in_budget and e[1] == 200]
    assert decoded, f"no heavy image was decoded, so nothing was measured: {_summary(answers)}"
    assert not _bad_answers(answers), _bad_answers(answers)
    assert growth_mb < limit_mb, f"RSS grew {growth_mb:.0f} MB under load (limit {limit_mb})"
    assert "Traceback" not in service_log
