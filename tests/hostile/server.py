"""Run the real service (``python -m app``) as a subprocess, and poke it from outside.

Hostile input is only meaningful against the real thing: uvicorn's HTTP parser, the event loop,
the decode processes and the memory they use. ``running_service`` starts the service in its own
process group (so its decode workers are stopped with it), logs to a file the tests can read
(a traceback in it is a failure), and waits until ``/health/ready`` says 200.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.hostile.rawhttp import Request, build, exchange

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

# Small, deterministic defaults; any of them can be overridden through ``settings``.
BASE_SETTINGS = {
    "host": "127.0.0.1",
    "device": "cpu",
    "precision": "fp32",
    "torch_threads": "1",
    # These tests are about the HTTP and decode path: eager PyTorch starts fastest (no
    # conversion). tests/model/test_engines.py and tests/app/test_engine_info.py cover the
    # engines; a test that wants one passes engine=... (conversions never go to ~/.cache).
    "engine": "eager",
    "engine_cache_dir": str(Path(tempfile.gettempdir()) / "invasive-test-engine-cache"),
}


class ServiceStartError(RuntimeError):
    """The service exited or never became ready; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningService:
    """A started service: where it listens, its process, and its log so far."""

    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None


def _service_env(port: int, checkpoint: Path, settings: dict[str, str]) -> dict[str, str]:
    # A developer's own INVASIVE_* variables must not leak into the service under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVASIVE_")}
    values = {**BASE_SETTINGS, **settings, "checkpoint": str(checkpoint), "port": str(port)}
    env.update({f"INVASIVE_{key.upper()}": str(value) for key, value in values.items()})
    return env


@contextlib.contextmanager
def running_service(checkpoint: Path, **settings: str) -> Iterator[RunningService]:
    """Start ``python -m app`` on ``checkpoint`` with ``INVASIVE_<KEY>=value`` for each setting.

    Yields once ``/health/ready`` answers 200; raises :class:`ServiceStartError` (with the log's
    tail) when the process exits first or is not ready within 90 s. On exit the whole process
    group gets SIGTERM, then SIGKILL after 30 s.
    """
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the service
        prefix="invasive-hostile-", suffix=".log", delete=False
    )
    log_path = Path(log_file.name)
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        env=_service_env(port, checkpoint, settings),
        cwd=REPO,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: decode workers go down with it
    )
    log_file.close()  # the child holds its own descriptor
    service = RunningService(port, process, log_path)
    try:
        _wait_until_ready(service)
        yield service
    finally:
        _stop(process)
        with contextlib.suppress(OSError):
            log_path.unlink()


def _wait_until_ready(service: RunningService) -> None:
    started = time.monotonic()
    probe = build("GET", "/health/ready", [("Connection", "close")])
    while time.monotonic() - started < READY_TIMEOUT_S:
        if not service.alive():
            raise ServiceStartError(
                f"the service exited with status {service.process.returncode} before it was "
                f"ready; its log ends:\n{service.log_tail()}"
            )
        if exchange(service.port, probe, timeout=2.0).status == 200:
            return
        time.sleep(0.2)
    raise ServiceStartError(
        f"the service was not ready after {READY_TIMEOUT_S:.0f} s; its log ends:\n"
        f"{service.log_tail()}"
    )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop(process: subprocess.Popen) -> None:
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    _signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    # Whatever is left of the group (a hung leader, orphaned decode workers) is killed.
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def send_raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Write ``data`` as-is to 127.0.0.1:``port``; the bytes that came back (one response, or
    whatever arrived before the server closed the connection or ``timeout`` passed)."""
    return exchange(port, Request(head=data), timeout=timeout).raw


def rss_tree_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and all its descendants, in bytes (0 if it is gone).

    Pages shared between processes (e.g. a forked worker's untouched copy of its parent) count
    once per process, so this overstates the true total: a conservative figure for a limit.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def process_count(pid: int) -> int:
    """How many processes the tree rooted at ``pid`` has (0 if it is gone)."""
    try:
        return 1 + len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return 0
