"""Start a server subprocess on loopback, wait until ready, watch its CPU and memory, stop it.

Each server runs in its own session (process group) so that stopping it also stops the worker
processes it spawned (LitServe runs its API servers and inference workers as separate processes).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health/ready"
    predict_path: str = "/v1/predict"
    port: int = 0
    notes: str = ""  # how it is configured, for the report
    # sockets that must listen on the port before it counts as ready: our service with
    # INVASIVE_PROCESSES=N listens N times (SO_REUSEPORT), each once warm; measuring after the
    # first would load the first process with what N are meant to share
    listeners: int = 1
    raw_bodies: bool = False  # takes the image itself as the body (ours only)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening_sockets(port: int) -> int | None:
    """TCP sockets listening on ``port`` on this machine; None where the OS will not say."""
    try:
        conns = psutil.net_connections("tcp")
    except psutil.AccessDenied:
        return None
    return sum(1 for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port)


def _process_tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(root: psutil.Process) -> float:
    """User+system CPU of ``root`` and its live descendants so far."""
    total = 0.0
    for proc in _process_tree(root):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def tree_rss_bytes(root: psutil.Process) -> int:
    total = 0
    for proc in _process_tree(root):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class TreeCpu:
    """CPU seconds of a process tree, counting descendants that exited between samples.

    ``tree_cpu_seconds`` sees live processes only: the service replaces a decode process every
    few hundred images (``app.decoding``), and a process that exits takes its CPU with it, which
    made our server's decode work look like someone else's ("background") CPU. Sampled every
    ``ResourceMonitor`` tick, each process (pid and start time) keeps its last-seen total, so an
    exited one loses at most its last interval.
    """

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self._last: dict[tuple[int, float], float] = {}
        self._lock = threading.Lock()
        self.sample()
        self.start = self.total

    def sample(self) -> None:
        for proc in _process_tree(self.root):
            try:
                key = (proc.pid, proc.create_time())
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            with self._lock:
                self._last[key] = max(self._last.get(key, 0.0), t.user + t.system)

    @property
    def total(self) -> float:
        with self._lock:
            return sum(self._last.values())


class ResourceMonitor:
    """Samples the server tree's RSS and CPU in a thread (CPU: :class:`TreeCpu`)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.root))
            self._cpu.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ResourceMonitor:
        self._cpu = TreeCpu(self.root)
        self._machine0 = machine_busy_seconds()
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cpu.sample()
        self.cpu_s = self._cpu.total - self._cpu.start
        self.machine_busy_s = machine_busy_seconds() - self._machine0
        self.wall_s = time.monotonic() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.root))

    @property
    def cpu_cores(self) -> float:
        """Average cores busy: 2.0 means both cores of this machine flat out."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores) since boot."""
    t = psutil.cpu_times()
    return (
        sum(t)
        - t.idle
        - getattr(t, "iowait", 0.0)
        - getattr(t, "guest", 0.0)
        - getattr(t, "guest_nice", 0.0)
    )


class RunningServer:
    def __init__(self, spec: ServerSpec, log_path: Path, ready_timeout_s: float = 300.0) -> None:
        self.spec = spec
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.cold_start_s: float | None = None

    def start(self) -> RunningServer:
        if not self.spec.port:
            self.spec.port = free_port()
        # benchmarks/ is not an installed package: servers run from the repository root.
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": pythonpath, **self.spec.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.spec.argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_ROOT,
        )
        self._wait_ready(started)
        self.cold_start_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        url = self.spec.url(self.spec.ready_path)
        while time.monotonic() - started < self.ready_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with code {self.proc.returncode} before it was "
                    f"ready; last log lines:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and self._all_listening():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.spec.name} not ready at {url} after {self.ready_timeout_s:.0f}s; "
            f"last log lines:\n{self.log_tail()}"
        )

    def _all_listening(self) -> bool:
        if self.spec.listeners <= 1:
            return True
        count = listening_sockets(self.spec.port)
        return count is None or count >= self.spec.listeners

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=grace_s)
        # Workers that outlived their parent are still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def idle_cpu_cores(pid: int, window_s: float = 1.0) -> float:
    """CPU the server tree burns doing nothing (pollers, heartbeats): the floor for "idle"."""
    root = psutil.Process(pid)
    before = tree_cpu_seconds(root)
    time.sleep(window_s)
    return (tree_cpu_seconds(root) - before) / window_s


def wait_until_idle(
    pid: int,
    idle_cores: float = 0.0,
    margin_cores: float = 0.15,
    window_s: float = 0.3,
    max_wait_s: float = 60.0,
) -> float:
    """Block until the server tree's CPU is back near its idle floor; seconds waited.

    wrk abandons the requests still in flight when it stops; a server keeps working on them. A
    measured run must not start on top of that backlog (it would be charged for the warm-up's
    leftovers), so each run waits for the server to go quiet first.
    """
    root = psutil.Process(pid)
    started = time.monotonic()
    while time.monotonic() - started < max_wait_s:
        before = tree_cpu_seconds(root)
        time.sleep(window_s)
        if (tree_cpu_seconds(root) - before) / window_s < idle_cores + margin_cores:
            break
    return time.monotonic() - started


def source_revision() -> str:
    """The commit measured, with "+dirty" when tracked files differ from it."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu
