"""Once a second: the server tree's RSS and CPU, the machine's busy CPU, the client's own CPU;
and a liveness probe that shows whether the service still answers health checks under load.

Sampling runs in threads so a stalled server (or a slow probe) never delays the samples.
"""

from __future__ import annotations

import resource
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import psutil

from benchmarks.serving.servers import TreeCpu, machine_busy_seconds, tree_rss_bytes


def client_cpu_seconds() -> float:
    """User+system CPU of this harness process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the monitor started
    rss_bytes: int  # server process tree
    server_cpu_s: float  # cumulative, server tree
    machine_busy_s: float  # cumulative, whole machine
    client_cpu_s: float  # cumulative, this harness


class SeriesMonitor:
    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.root = psutil.Process(pid)
        # counts decode processes that were replaced between samples (see TreeCpu)
        self.cpu = TreeCpu(self.root)
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample(self) -> Sample:
        s = Sample(
            self.now(),
            tree_rss_bytes(self.root),
            self._server_cpu_seconds(),
            machine_busy_seconds(),
            client_cpu_seconds(),
        )
        self.samples.append(s)
        return s

    def _server_cpu_seconds(self) -> float:
        self.cpu.sample()
        return self.cpu.total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> SeriesMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def between(self, t_from: float, t_to: float) -> list[Sample]:
        return [s for s in list(self.samples) if t_from <= s.t <= t_to]


class LivenessProbe:
    """GET ``url`` every ``interval_s`` (blocking, in its own thread): (t, status, seconds)."""

    def __init__(self, url: str, t0: float, interval_s: float = 1.0, timeout_s: float = 10.0):
        self.url, self.t0 = url, t0
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.answers: list[tuple[float, int | None, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-liveness", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status: int | None = None
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError):
                status = None
            self.answers.append((started - self.t0, status, time.monotonic() - started))
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> LivenessProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 2)
