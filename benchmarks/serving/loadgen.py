"""Drive a server with wrk (C, event-driven: little CPU per request) and read its JSON summary."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("wrk_multipart.lua")
JSON_PREFIX = "WRK_JSON "
INSTALL_HINT = (
    "wrk (the HTTP load generator) is not installed. On Debian/Ubuntu: "
    "`apt-get update && apt-get install -y wrk`; on macOS: `brew install wrk`."
)


class LoadGeneratorMissing(RuntimeError):
    pass


@dataclass
class LoadResult:
    """One measured cell as the client saw it."""

    concurrency: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    latency_ms: dict[str, float | None]  # None when no request was answered in the window
    client_cpu_s: float  # user+system CPU that wrk itself used during the measured window

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def ok_requests(self) -> int:
        # wrk counts non-2xx responses in requests *and* in errors.status
        return max(0, self.requests - self.errors.get("status", 0))

    @property
    def images_per_s(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadGeneratorMissing(INSTALL_HINT)
    return path


def parse_wrk_output(stdout: str, concurrency: int, client_cpu_s: float = 0.0) -> LoadResult:
    """Find the line our Lua ``done()`` printed and turn it into a :class:`LoadResult`."""
    for line in stdout.splitlines():
        if line.startswith(JSON_PREFIX):
            raw = json.loads(line[len(JSON_PREFIX) :])
            break
    else:
        raise RuntimeError(f"wrk printed no {JSON_PREFIX.strip()} line; its output was:\n{stdout}")
    lat = raw["latency_us"]
    answered = int(raw["requests"]) > 0
    return LoadResult(
        concurrency=concurrency,
        duration_s=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        errors={k: int(v) for k, v in raw["errors"].items()},
        latency_ms={
            f"{key}_ms": lat[key] / 1000.0 if answered else None
            for key in ("p50", "p95", "p99", "mean", "max")
        },
        client_cpu_s=client_cpu_s,
    )


def wrk_command(
    url: str,
    body_dir: Path,
    body_count: int,
    content_type: str,
    concurrency: int,
    duration_s: float,
    timeout_s: float,
    threads: int = 1,
) -> list[str]:
    # One thread drives 32 connections easily and leaves the most CPU to the server under test.
    threads = max(1, min(threads, concurrency))
    return [
        require_wrk(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_dir),
        str(body_count),
        content_type,
    ]


def run_wrk(
    url: str,
    body_dir: Path,
    body_count: int,
    content_type: str,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 60.0,
    threads: int = 1,
) -> LoadResult:
    """Run wrk once to completion; its CPU comes from this process's reaped-children usage."""
    cmd = wrk_command(url, body_dir, body_count, content_type, concurrency, duration_s, timeout_s,
                      threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f"wrk exited {proc.returncode} after {time.monotonic() - started:.1f}s: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_wrk_output(proc.stdout, concurrency, client_cpu_s=cpu)
