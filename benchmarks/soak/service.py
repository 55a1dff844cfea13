"""The service under test and the machine it runs on: how it is started, what is recorded
about the box, and :class:`Phases`, which runs each load phase and measures the machine
around it (then waits for the server to go quiet, so no phase pays for the previous one).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.serving.servers import (
    HOST,
    REPO_ROOT,
    RunningServer,
    ServerSpec,
    cpu_model,
    free_port,
    idle_cpu_cores,
    python_module_argv,
    source_revision,
    wait_until_idle,
)
from benchmarks.soak import client as load
from benchmarks.soak.config import SoakConfig
from benchmarks.soak.monitor import Sample, SeriesMonitor
from benchmarks.soak.stats import cores

DEMO_CHECKPOINT = "demo-checkpoint.safetensors"


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] soak: {message}", file=sys.stderr, flush=True)


def machine_info(argv: list[str], client: str = "http1") -> dict:
    """What a reader needs to judge the figures: machine, its load, revision, command."""
    cpu = cpu_model()

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "available_cpus": len(os.sched_getaffinity(0)),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "revision": source_revision(),
        "command": "python -m benchmarks.soak " + shlex.join(argv),
        "python": platform.python_version(),
        "torch": version("torch"),
        "client": client if client != "httpx" else f"httpx {version('httpx')}",
        "event_loop": event_loop_name(),
    }


def event_loop_name() -> str:
    loop = load.new_event_loop()
    try:
        return type(loop).__module__.split(".")[0]  # "uvloop" or "asyncio"
    finally:
        loop.close()


def demo_checkpoint(out: Path) -> Path:
    """The tiny demo checkpoint, built once per out dir in a child process (keeps torch out of
    the client's memory and CPU)."""
    path = out / DEMO_CHECKPOINT
    if not path.exists():
        log(f"building the demo checkpoint {path}")
        code = "import sys; from training.demo import build_demo_checkpoint as b; b(sys.argv[1])"
        subprocess.run(
            [sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=True, timeout=600
        )
    return path


def service_spec(cfg: SoakConfig, checkpoint: Path) -> ServerSpec:
    port = free_port()
    env = {
        "INVASIVE_CHECKPOINT": str(checkpoint.resolve()),
        "INVASIVE_DEVICE": "cpu",
        "INVASIVE_LOG_LEVEL": "warning",  # access logs would cost the server CPU under load
        **cfg.env,
        # Loopback only and our own port, whatever --env says.
        "INVASIVE_HOST": HOST,
        "INVASIVE_PORT": str(port),
    }
    notes = " ".join(f"{k}={v}" for k, v in cfg.env.items())
    return ServerSpec("ours", python_module_argv("app"), env, port=port, notes=notes)


class Phases:
    """Runs each phase on one event loop and measures the machine around it."""

    def __init__(self, cfg: SoakConfig, server: RunningServer, monitor: SeriesMonitor) -> None:
        self.cfg, self.server, self.monitor = cfg, server, monitor
        self.loop = load.new_event_loop()
        self.idle_floor = idle_cpu_cores(server.proc.pid)
        self.windows: dict[str, list[float]] = {}
        key = cfg.env.get("INVASIVE_API_KEY")
        self.headers = {"x-api-key": key} if key else {}

    def client(self) -> load.LoadClient:
        transport = load.make_transport(
            self.cfg.client, HOST, self.server.spec.port, self.cfg.max_inflight, self.headers
        )
        return load.LoadClient(transport, self.cfg.request_timeout_s)

    def measure(self, name: str, make: Callable[[load.LoadClient], Awaitable]) -> tuple:
        """(value, resources) of running ``make(client)``; then wait for the server to idle."""

        stale: list[int] = []

        async def body() -> object:
            client = self.client()  # a fresh pool per phase: no connection idles across phases
            try:
                return await make(client)
            finally:
                stale.append(client.transport.stale_retries)
                await client.aclose()

        before = self.monitor.sample()
        value = self.loop.run_until_complete(body())
        after = self.monitor.sample()
        self.windows[name] = [before.t, after.t]
        resources = window_resources(self.monitor.between(before.t, after.t), before, after)
        waited = wait_until_idle(
            self.server.proc.pid, self.idle_floor, max_wait_s=self.cfg.idle_wait_s
        )
        resources["idle_wait_after_s"] = round(waited, 2)
        resources["client_stale_connection_retries"] = stale[0] if stale else 0
        return value, resources

    def close(self) -> None:
        self.loop.close()


def window_resources(samples: list[Sample], before: Sample, after: Sample) -> dict:
    wall = after.t - before.t
    server = cores(after.server_cpu_s - before.server_cpu_s, wall)
    client = cores(after.client_cpu_s - before.client_cpu_s, wall)
    machine = cores(after.machine_busy_s - before.machine_busy_s, wall)
    rss = [s.rss_bytes for s in samples] or [after.rss_bytes]
    return {
        "wall_s": round(wall, 2),
        "server_cpu_cores": round(server, 3),
        "client_cpu_cores": round(client, 3),
        "other_cpu_cores": round(max(0.0, machine - server - client), 3),
        "server_rss_mb_start": round(before.rss_bytes / 1e6, 1),
        "server_rss_mb_peak": round(max(rss) / 1e6, 1),
        "server_rss_mb_end": round(after.rss_bytes / 1e6, 1),
    }
