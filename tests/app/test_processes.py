"""``INVASIVE_PROCESSES``: several server processes on one port (app.processes), over real HTTP.

The supervisor starts them, each listens once warm, a killed one is replaced while the others
keep answering, and SIGTERM drains them all and exits 0 with nothing left running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from app.config import Settings
from app.processes import CHILD_ENV, child_environment
from tests.app.images import jpeg_bytes
from tests.app.test_main import REPO, free_port, run_module, service_env


def test_each_process_gets_its_share_of_the_host():
    settings = Settings(processes=4, memory_budget_mb=384, _env_file=None)
    env = child_environment(settings, 3, cpus=16, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", CHILD_ENV: "3", "INVASIVE_TORCH_THREADS": "4",
                   "INVASIVE_DECODE_PROCESSES": "4", "INVASIVE_MEMORY_BUDGET_MB": "96"}
    chosen = Settings(processes=4, torch_threads=2, decode_processes=3, _env_file=None)
    env = child_environment(chosen, 0, cpus=16, base={})
    assert "INVASIVE_TORCH_THREADS" not in env and "INVASIVE_DECODE_PROCESSES" not in env
    assert child_environment(Settings(processes=64), 0, cpus=2, base={})[
        "INVASIVE_MEMORY_BUDGET_MB"] == "16"


def test_several_processes_need_a_fixed_port(service_checkpoint):
    result = run_module(service_env(checkpoint=str(service_checkpoint), processes="2", port="0"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "invasive-api: error: INVASIVE_PROCESSES > 1 needs a fixed INVASIVE_PORT "
        "(the processes share it)"
    )


def _listeners(port: int) -> set[int]:
    """PIDs listening on ``port``."""
    return {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")


def _predict(base: str) -> int:
    # a new connection each time, so the kernel picks a process each time
    with httpx.Client(timeout=30) as client:
        return client.post(f"{base}/v1/predict",
                           files={"file": ("f.jpg", jpeg_bytes(seed=5), "image/jpeg")}).status_code


@pytest.mark.timeout(180)
def test_processes_share_the_port_survive_a_crash_and_drain_on_sigterm(service_checkpoint):
    started = time.monotonic()
    port = free_port()
    env = service_env(checkpoint=str(service_checkpoint), port=str(port), processes="2",
                      engine="eager", torch_threads="2", decode_processes="1",
                      drain_seconds="1", log_level="info")
    parent = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        servers = _wait_for(lambda: len(_listeners(port)) == 2 and _listeners(port), 90,
                            "two processes listening")
        children = {p.pid for p in psutil.Process(parent.pid).children()}
        assert servers <= children and parent.pid not in servers
        print(f"\n  two processes listening after {time.monotonic() - started:.1f}s")
        assert [_predict(base) for _ in range(6)] == [200] * 6

        victim = psutil.Process(min(servers))
        victim.kill()
        victim.wait(10)  # connections the kernel queued on it before it died are lost with it
        # the survivor answers meanwhile; the replacement listens once it is warm
        assert [_predict(base) for _ in range(4)] == [200] * 4
        replaced = _wait_for(lambda: len(_listeners(port)) == 2 and _listeners(port) - servers,
                             60, "a replacement process listening")
        print(f"  replacement listening after {time.monotonic() - started:.1f}s")
        assert victim.pid not in _listeners(port) and len(replaced) == 1
        assert [_predict(base) for _ in range(4)] == [200] * 4

        everyone = [psutil.Process(parent.pid), *psutil.Process(parent.pid).children(True)]
        parent.send_signal(signal.SIGTERM)
        output, _ = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    print(f"  stopped after {time.monotonic() - started:.1f}s")
    assert parent.returncode == 0, output
    assert output.count("readiness is 503 now") == 2  # each process drained
    assert "exited with status -9; restarting" in output
    _, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive, f"left running: {alive}"
