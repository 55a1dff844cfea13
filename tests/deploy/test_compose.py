"""docker-compose.yml and its CPU override, read with PyYAML (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from tests.deploy.parsing import (
    COMPOSE_CPU_FILE,
    COMPOSE_FILE,
    DOCKERFILE,
    REPO_ROOT,
    RESET,
    dockerfile_stages,
    load_compose,
)

COMPOSE = load_compose(COMPOSE_FILE)
CPU_OVERRIDE = load_compose(COMPOSE_CPU_FILE)
SERVICES: dict[str, Any] = COMPOSE["services"]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _volume(service: dict[str, Any], target: str) -> tuple[str, str]:
    """(source, mode) of the short-syntax volume mounted at ``target``."""
    for volume in service["volumes"]:
        # SOURCE:TARGET[:MODE], where SOURCE may be a ${VAR:-default} holding a colon itself.
        match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+|\$\{[^}]*\}))?", volume)
        assert match, f"not a short-syntax volume: {volume}"
        source, mounted_at, mode = match.groups()
        if mounted_at == target:
            return source, _default(mode or "rw")
    raise AssertionError(f"nothing mounted at {target}")


def _default(value: str) -> str:
    """The default of a ``${VAR:-default}`` interpolation (or the value itself)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def test_api_reserves_an_nvidia_gpu() -> None:
    (device,) = _devices(SERVICES["api"])
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    # The count is configurable from the host (DEPLOY_GPU_COUNT, a number or "all").
    assert re.fullmatch(r"\$\{DEPLOY_GPU_COUNT:-1\}", str(device["count"]))


def test_api_restarts_and_is_health_checked_like_the_image() -> None:
    api = SERVICES["api"]
    assert api["restart"] in {"unless-stopped", "always"}
    (image_check,) = dockerfile_stages(DOCKERFILE)[-1].all("HEALTHCHECK")
    assert api["healthcheck"]["test"] == ["CMD", *image_check.exec_form()]
    assert "/health/ready" in api["healthcheck"]["test"][-1]
    assert api["healthcheck"]["start_period"]
    # Longer than Docker's default 10 s, so a stop lets in-flight requests finish.
    assert re.fullmatch(r"(\d+)s", api["stop_grace_period"])
    assert int(api["stop_grace_period"][:-1]) > 30


def test_api_port_and_env_agree() -> None:
    api = SERVICES["api"]
    env = api["environment"]
    assert env["INVASIVE_HOST"] == "0.0.0.0"
    (port,) = api["ports"]
    published, container = port.rsplit(":", 1)
    assert container == env["INVASIVE_PORT"]
    assert re.fullmatch(r"\$\{DEPLOY_PORT:-8000\}", published)
    assert api["command"] == ["invasive-api"]
    assert "invasive-api" in SCRIPTS


def test_api_reads_the_checkpoint_from_the_model_volume_read_only() -> None:
    api = SERVICES["api"]
    source, mode = _volume(api, "/models")
    assert mode == "ro"
    assert api["environment"]["INVASIVE_CHECKPOINT"] == "/models/model.safetensors"
    assert _default(source) in COMPOSE["volumes"]


def test_api_takes_settings_from_an_env_file_with_a_committed_example() -> None:
    (env_file,) = SERVICES["api"]["env_file"]
    assert env_file["path"] == "deploy/invasive.env"
    # Optional, so a first `docker compose up` works before anyone has copied the example.
    assert env_file["required"] is False
    assert (REPO_ROOT / "deploy/invasive.env.example").is_file()
    assert "invasive.env" in (REPO_ROOT / "deploy/.gitignore").read_text().split()


def test_api_waits_for_a_readable_checkpoint() -> None:
    # Without a model the API exits at once; under `restart: unless-stopped` that would loop
    # forever. The one-shot model-check service stops `docker compose up` with a message instead.
    assert SERVICES["api"]["depends_on"] == {
        "model-check": {"condition": "service_completed_successfully"}
    }
    check = SERVICES["model-check"]
    assert check["restart"] == "no"
    assert not _devices(check)
    script = check["command"][-1]
    copied = [i.args.split()[-1] for i in dockerfile_stages(DOCKERFILE)[-1].all("COPY")]
    assert script in copied, f"{script} is not copied into the image"
    assert _volume(check, "/models") == _volume(SERVICES["api"], "/models")
    assert check["environment"]["INVASIVE_CHECKPOINT"] == "/models/model.safetensors"


def test_train_is_a_profile_running_the_training_cli() -> None:
    train = SERVICES["train"]
    assert train["profiles"] == ["train"]
    assert train["entrypoint"] == ["invasive-train"]
    assert "invasive-train" in SCRIPTS
    assert train["restart"] == "no"
    assert train.get("shm_size")  # DataLoader workers need more than Docker's 64 MB
    assert _devices(train) == _devices(SERVICES["api"])
    # Everything else runs on a plain `docker compose up -d`.
    assert [name for name, service in SERVICES.items() if "profiles" in service] == ["train"]


def test_train_reads_data_read_only_and_writes_the_volume_the_api_reads() -> None:
    train = SERVICES["train"]
    data_source, data_mode = _volume(train, "/data")
    assert data_mode == "ro"
    assert _default(data_source) == "./data"
    model_source, model_mode = _volume(train, "/models")
    assert model_mode == "rw"
    assert model_source == _volume(SERVICES["api"], "/models")[0]


def test_named_volume_mount_points_belong_to_the_image_user() -> None:
    # Docker gives a new named volume its mount point's ownership; a mount point missing from
    # the image would come up owned by root and unwritable for uid 10001.
    runs = " ".join(i.args for i in dockerfile_stages(DOCKERFILE)[-1].all("RUN"))
    owned = re.search(r"install --directory --owner invasive --group invasive ([^&]+)", runs)
    assert owned, "the final stage creates no user-owned mount points"
    for name, service in SERVICES.items():
        for volume in service["volumes"]:
            source, target = volume.split(":/", 1)
            if _default(source) in COMPOSE["volumes"]:
                target = "/" + target.split(":")[0]
                assert target in owned.group(1).split(), f"{name}: {target}"


def test_all_services_run_one_image() -> None:
    images = {service["image"] for service in SERVICES.values()}
    assert len(images) == 1
    for service in SERVICES.values():
        assert service["build"]["context"] == "."
        assert "ALL" in service["cap_drop"]


def test_cpu_override_drops_every_gpu_reservation() -> None:
    with_gpu = {name for name, service in SERVICES.items() if _devices(service)}
    assert with_gpu == {"api", "train"}
    overridden = CPU_OVERRIDE["services"]
    assert set(overridden) == with_gpu  # adds no service of its own
    for name in with_gpu:
        assert _devices(overridden[name]) == RESET, name
    assert overridden["api"]["environment"]["INVASIVE_DEVICE"] == "cpu"


@pytest.mark.parametrize("path", [COMPOSE_FILE, COMPOSE_CPU_FILE])
def test_compose_files_have_no_tabs_or_trailing_spaces(path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert "\t" not in line and line == line.rstrip(), f"{path.name}:{number}"
