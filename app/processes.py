"""Several server processes on one port (``INVASIVE_PROCESSES``), for hosts where one event loop
is the limit: a GPU host answering thousands of uploads a second, or a CPU host with many cores.

Each process is a whole service (its own model copy, decode processes, batcher, health and
drain), started as ``python -m app`` with ``INVASIVE_PROCESS_INDEX`` set. It binds the port with
``SO_REUSEPORT`` and starts listening only when its warm-up is done (asyncio listens on the
socket when uvicorn starts serving it), so the kernel spreads new connections over the processes
that are ready and never queues one behind a process that is still loading its model.

The parent only supervises, and imports nothing heavy: it splits the host's share-outs between
the processes (torch threads and decode processes when left at auto, and the memory budget),
forwards SIGTERM/SIGINT so every process drains as a lone service does, restarts a process that
dies (after a pause that grows while it keeps dying young), and stops everything if one fails on
a configuration error, which would fail again on every restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from app.config import Settings, available_cpus

logger = logging.getLogger("app.processes")

CHILD_ENV = "INVASIVE_PROCESS_INDEX"  # set in each server process: its index, 0 ... N-1
EXIT_BAD_CONFIG = 2  # app.__main__: a process that exits with it fails again on restart
YOUNG_S = 60.0  # a process that dies younger than this is restarted after a growing pause
FIRST_PAUSE_S, LONGEST_PAUSE_S = 1.0, 30.0
STOP_GRACE_S = 60.0  # after its drain, how long a process may take to finish before SIGKILL


def is_child() -> bool:
    return CHILD_ENV in os.environ


def child_environment(settings: Settings, index: int, cpus: int | None = None,
                      base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of server process ``index``: its index and its share of the host."""
    n = settings.processes
    cpus = cpus or available_cpus()
    env = dict(os.environ if base is None else base)
    env[CHILD_ENV] = str(index)
    if not settings.torch_threads:
        env["INVASIVE_TORCH_THREADS"] = str(max(1, cpus // n))
    if not settings.decode_processes:
        env["INVASIVE_DECODE_PROCESSES"] = str(max(1, cpus // n))
    env["INVASIVE_MEMORY_BUDGET_MB"] = str(max(16, settings.memory_budget_mb // n))
    return env


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """Bound, not yet listening: uvicorn's asyncio server listens once warm-up is done."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it (a drain) if the supervising parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Process:
    def __init__(self, index: int, env: dict[str, str]) -> None:
        self.index = index
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.pause = FIRST_PAUSE_S
        self.restart_at: float | None = None

    def start(self) -> None:
        # Its own session: a terminal's Ctrl-C reaches the parent only, which forwards it once.
        self.proc = subprocess.Popen([sys.executable, "-m", "app"], env=self.env,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        self.restart_at = None
        logger.info("server process %d started (pid %d)", self.index, self.proc.pid)


def supervise(settings: Settings) -> int:
    """Run ``settings.processes`` server processes until a signal; their worst exit status."""
    processes = [_Process(i, child_environment(settings, i)) for i in range(settings.processes)]
    stopping = threading.Event()
    failure: list[int] = []

    def forward(sig: int, _frame) -> None:
        stopping.set()
        for p in processes:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    logger.info("starting %d server processes on %s:%d", len(processes), settings.host,
                settings.port)
    for p in processes:
        p.start()
    while not stopping.wait(0.25):
        now = time.monotonic()
        for p in processes:
            assert p.proc is not None
            if p.restart_at is not None:
                if now >= p.restart_at:
                    p.start()
                continue
            code = p.proc.poll()
            if code is None:
                continue
            if code == EXIT_BAD_CONFIG:
                logger.error("server process %d exited with status 2 (a configuration error); "
                             "stopping", p.index)
                failure.append(code)
                forward(signal.SIGTERM, None)
                break
            if now - p.started < YOUNG_S:  # dying young again: wait longer each time
                p.restart_at = now + p.pause
                p.pause = min(LONGEST_PAUSE_S, p.pause * 2)
            else:
                p.restart_at, p.pause = now, FIRST_PAUSE_S
            logger.error("server process %d (pid %d) exited with status %s; restarting in %.0fs",
                         p.index, p.proc.pid, code, p.restart_at - now)
    return max([*failure, *(_wait(p, settings) for p in processes)])


def _wait(p: _Process, settings: Settings) -> int:
    """Wait for a stopping process; 0 when it ended well (uvicorn re-raises SIGTERM/SIGINT)."""
    if p.proc is None or p.restart_at is not None:
        return 0
    try:
        code = p.proc.wait(timeout=settings.drain_seconds + STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        logger.error("server process %d did not stop in time; killing it", p.index)
        p.proc.kill()
        p.proc.wait()
        return 1
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else (code if code > 0 else 1)
