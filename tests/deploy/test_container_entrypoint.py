"""The container's commands, run outside Docker with the environment the image and compose set.

`invasive-api` (the image's CMD) starts on a real demo checkpoint, turns ready, passes the
image's own HEALTHCHECK command and stops cleanly on SIGTERM (what `docker stop` sends). The
health check is also shown to fail on a 503 and on a dead port, and the compose `model-check`
script to pass or stop `up` with a clear message.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.parsing import (
    COMPOSE_CPU_FILE,
    COMPOSE_FILE,
    REPO_ROOT,
    dockerfile_stages,
    load_compose,
)

FINAL_STAGE = dockerfile_stages()[-1]
(_HEALTHCHECK,) = FINAL_STAGE.all("HEALTHCHECK")
HEALTHCHECK_COMMAND = _HEALTHCHECK.exec_form()
(_CMD,) = FINAL_STAGE.all("CMD")
ENTRY_COMMAND = _CMD.exec_form()
VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _container_env(**overrides: str) -> dict[str, str]:
    """The image's ENV, then compose's api environment and the CPU override, then overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVASIVE_")}
    env.update(FINAL_STAGE.env())
    env.update(load_compose(COMPOSE_FILE)["services"]["api"]["environment"])
    env.update(load_compose(COMPOSE_CPU_FILE)["services"]["api"]["environment"])
    # This machine's venv stands in for the image's /opt/venv.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    env.update(overrides)
    return env


def _run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command as Docker runs it inside the container."""
    assert HEALTHCHECK_COMMAND[0] == "python"
    command = [sys.executable, *HEALTHCHECK_COMMAND[1:]]
    env = _container_env(INVASIVE_PORT=str(port))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def running_api(
    demo_checkpoint: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port = _free_port()
    env = _container_env(
        INVASIVE_HOST="127.0.0.1",  # not 0.0.0.0: a test listens on loopback only
        INVASIVE_PORT=str(port),
        INVASIVE_CHECKPOINT=str(demo_checkpoint),
        INVASIVE_TORCH_THREADS="1",  # two cores shared by the whole suite
        INVASIVE_DECODE_PROCESSES="1",
    )
    executable = shutil.which(ENTRY_COMMAND[0], path=env["PATH"])
    assert executable, f"{ENTRY_COMMAND[0]} is not installed (pip install -e .)"
    log_path = tmp_path / "api.log"
    log = log_path.open("w+")
    process = subprocess.Popen(
        [executable, *ENTRY_COMMAND[1:]], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"invasive-api exited with {process.returncode}:\n{log.read()}")
            try:
                if _get(port, "/health/ready")[0] == 200:
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"not ready after {READY_TIMEOUT_S}s:\n{log.read()}")
            time.sleep(0.25)
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_entry_command_serves_passes_its_healthcheck_and_stops_cleanly(running_api) -> None:
    process, port, log_path = running_api

    status, body = _get(port, "/health/ready")
    assert status == 200
    assert json.loads(body)["model_id"].startswith("resnet18-")

    healthcheck = _run_healthcheck(port)
    assert healthcheck.returncode == 0, healthcheck.stderr

    status, body = _get(port, "/metrics")  # the README's metrics check
    assert status == 200
    assert b"# TYPE" in body

    process.send_signal(signal.SIGTERM)  # `docker stop`
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it
    # ended (Docker reports 143); the lifespan's shutdown must have run to completion first.
    assert process.wait(timeout=40) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log_path.read_text()


class _NotReadyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def test_healthcheck_reports_unhealthy_on_503_and_on_a_dead_port() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotReadyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        not_ready = _run_healthcheck(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    # Docker reads exit 1 as unhealthy (2 is reserved).
    assert not_ready.returncode == 1
    assert "503" in not_ready.stderr
    assert _run_healthcheck(_free_port()).returncode == 1


def _load_model_check() -> ModuleType:
    path = REPO_ROOT / "deploy" / "check_checkpoint.py"
    spec = importlib.util.spec_from_file_location("check_checkpoint", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_check_passes_on_a_real_checkpoint(demo_checkpoint, monkeypatch, capsys) -> None:
    monkeypatch.setenv("INVASIVE_CHECKPOINT", str(demo_checkpoint))
    assert _load_model_check().main() == 0
    assert "resnet18" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"not a safetensors file"], ids=["missing", "corrupt"])
def test_model_check_stops_with_the_first_run_step(
    content: bytes | None, tmp_path: Path, monkeypatch, capsys
) -> None:
    checkpoint = tmp_path / "model.safetensors"
    if content is not None:
        checkpoint.write_bytes(content)
    monkeypatch.setenv("INVASIVE_CHECKPOINT", str(checkpoint))
    assert _load_model_check().main() == 1
    err = capsys.readouterr().err
    assert str(checkpoint) in err
    assert "docker compose --profile train run --rm train" in err
    assert "Traceback" not in err
