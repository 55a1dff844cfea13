"""A Docker engine for the container test, and the images it runs.

The engine: the running one if ``docker info`` answers; else, as root, Debian's ``docker.io``
is installed when missing and ``dockerd`` started in the background. Where none can be had the
caller skips with the reason returned here.

The images: the project's Dockerfile and the proxy's, built with the legacy builder (BuildKit
would need its frontend image from Docker Hub on some engines). Their bases are the official
images when the engine has them or can pull them; otherwise the Debian stand-ins that
``deploy/standin/build.sh`` bootstraps with debootstrap. Layers stay in the engine's cache, so
a second run rebuilds only what changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.container.timeline import step

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_PYTHON_IMAGE = "python:3.11.14-slim-bookworm"
OFFICIAL_DEBIAN_IMAGE = "debian:bookworm-slim"
SERVICE_IMAGE = "invasive-species-service:container-test"
# The builder stage tagged too: it holds the cached torch and dependency layers, which would
# otherwise be dangling images, removed by the prune below.
BUILDER_IMAGE = "invasive-species-service:container-test-builder"
PROXY_IMAGE = "invasive-species-proxy:container-test"
# The image is ~6.5 GB (3.2 GB of it CUDA libraries) and its build needs about as much again.
MIN_FREE_DISK_GB = 20
LEGACY_BUILDER = {"DOCKER_BUILDKIT": "0"}


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure the error shows its last lines."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{tail}")
    return result


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def ensure_engine() -> str | None:
    """Make sure a Docker engine answers. Returns None when it does, else why it cannot."""
    if _engine_answers():
        return None
    is_root = os.geteuid() == 0
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        if not is_root or shutil.which("apt-get") is None:
            return "no Docker engine, and docker.io cannot be installed here (needs root and apt)"
        with step("install docker.io (apt)"):
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            installed = subprocess.run(
                ["apt-get", "install", "-y", "-qq", "docker.io"],
                capture_output=True, text=True, timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        if installed.returncode != 0:
            return f"apt-get install docker.io failed: {installed.stderr.strip()[-300:]}"
    if not is_root:
        return "no Docker engine answers, and dockerd can only be started by root"
    log = open("/tmp/invasive-container-test-dockerd.log", "ab")  # noqa: SIM115 (outlives us)
    with step("start dockerd"):
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _engine_answers():
                return None
            time.sleep(1)
    return "dockerd was started but does not answer (see /tmp/invasive-container-test-dockerd.log)"


def free_disk_reason() -> str | None:
    """None when the engine's data root has room for the image; else why not."""
    root = run(["docker", "info", "--format", "{{.DockerRootDir}}"], timeout=30).stdout.strip()
    free_gb = shutil.disk_usage(root or "/").free / 1e9
    if free_gb < MIN_FREE_DISK_GB:
        return (f"only {free_gb:.0f} GB free under {root}; building the image needs "
                f"{MIN_FREE_DISK_GB} GB")
    return None


def _have_image(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def _pullable(tag: str) -> bool:
    if _have_image(tag):
        return True
    with step(f"try docker pull {tag}"):
        return subprocess.run(["docker", "pull", "-q", tag], capture_output=True,
                              timeout=120).returncode == 0


def base_images() -> tuple[str, str]:
    """(python base, debian base): the official images, else the debootstrapped stand-ins."""
    if _pullable(OFFICIAL_PYTHON_IMAGE) and _pullable(OFFICIAL_DEBIAN_IMAGE):
        return OFFICIAL_PYTHON_IMAGE, OFFICIAL_DEBIAN_IMAGE
    if shutil.which("debootstrap") is None:
        with step("install debootstrap (apt)"):
            run(["apt-get", "update", "-qq"], timeout=300)
            run(["apt-get", "install", "-y", "-qq", "debootstrap"], timeout=600,
                env={"DEBIAN_FRONTEND": "noninteractive"})
    with step("stand-in base images (debootstrap; cached after the first run)"):
        out = run(["bash", str(REPO_ROOT / "deploy/standin/build.sh")], timeout=1200,
                  env=LEGACY_BUILDER)
    debian, python = out.stdout.strip().splitlines()[-2:]
    return python, debian


def build_images() -> tuple[str, str]:
    """Build the service and proxy images (cached layers reused). Returns their tags."""
    python_base, debian_base = base_images()
    with step(f"docker build service image (on {python_base})"):
        for target, tag in (("builder", BUILDER_IMAGE), ("runtime", SERVICE_IMAGE)):
            run(["docker", "build", "--target", target, "--build-arg",
                 f"PYTHON_IMAGE={python_base}", "-t", tag, str(REPO_ROOT)],
                timeout=3600, env=LEGACY_BUILDER)
    # Each rebuild leaves the previous images dangling (several GB each); the tagged ones keep
    # the cache for the next run.
    run(["docker", "image", "prune", "--force"], timeout=600)
    with step(f"docker build proxy image (on {debian_base})"):
        run(["docker", "build", "--build-arg", f"DEBIAN_IMAGE={debian_base}",
             "-t", PROXY_IMAGE, str(REPO_ROOT / "deploy/proxy")], timeout=900, env=LEGACY_BUILDER)
    return SERVICE_IMAGE, PROXY_IMAGE


def image_size_gb(tag: str) -> float:
    size = run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], timeout=30).stdout
    return int(size.strip()) / 1e9
