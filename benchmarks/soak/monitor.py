"""Once a second: the server tree's RSS and CPU, the machine's busy CPU, the client's own CPU;
and a liveness probe that shows whether the service still answers health checks under load.

Sampling runs in threads so a stalled server (or a slow probe) never delays the samples.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
import time
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


# The probe runs in a process of its own: as a thread of the load generator it waited for that
# process's GIL and event loop, and reported seconds the server never spent (2026-11-28: the
# soak's probe said p99 1.72 s where a separate curl said 0.51 s and the server timed every
# liveness request under 10 ms; docs/benchmarks.md).
_PROBE = r"""
import sys, time, urllib.error, urllib.request
url, interval, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
while True:
    started = time.monotonic()
    status = "-"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError):
        pass
    print(started, status, time.monotonic() - started, flush=True)
    time.sleep(max(0.0, interval - (time.monotonic() - started)))
"""


class LivenessProbe:
    """GET ``url`` every ``interval_s`` from a process of its own: (t, status, seconds) each.

    ``t`` is since ``t0`` (both on the machine's monotonic clock, which every process shares).
    """

    def __init__(self, url: str, t0: float, interval_s: float = 1.0, timeout_s: float = 10.0):
        self.url, self.t0 = url, t0
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.answers: list[tuple[float, int | None, float]] = []
        self._proc: subprocess.Popen | None = None
        self._reader = threading.Thread(target=self._read, name="soak-liveness", daemon=True)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            started, status, seconds = line.split()
            code = None if status == "-" else int(status)
            self.answers.append((float(started) - self.t0, code, float(seconds)))

    def start(self) -> LivenessProbe:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, self.url, str(self.interval_s), str(self.timeout_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader.start()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=self.timeout_s + 2)
        self._reader.join(timeout=2)
