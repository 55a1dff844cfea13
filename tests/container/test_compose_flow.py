"""The README's "Deploy on a CUDA host" flow, on the CPU override, as an operator runs it:
refusal without a checkpoint, a demo checkpoint trained in the container, up, health, a
prediction, the hardening, a model update, a checkpoint trained on the host imported, down.

The tests run in file order on one compose project (each step builds on the one before)."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.images import jpeg_bytes
from tests.container.compose import ComposeProject, exec_in, inspect, wait_ready
from tests.container.conftest import free_port

CHECKPOINT = "/models/model.safetensors"


class Stack:
    def __init__(self, compose: ComposeProject, base_url: str) -> None:
        self.compose, self.base_url = compose, base_url
        self.model_ids: list[str] = []

    def api_container(self) -> str:
        ids = self.compose.container_ids("api")
        assert len(ids) == 1, ids
        return ids[0]


@pytest.fixture(scope="module")
def stack(docker_images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[Stack]:
    service_image, _ = docker_images
    port = free_port()
    data_dir = tmp_path_factory.mktemp("data")
    compose = ComposeProject(
        "invasive-ct-flow", ["docker-compose.yml", "docker-compose.cpu.yml"],
        {"DEPLOY_IMAGE": service_image, "DEPLOY_PORT": str(port),
         "DEPLOY_DATA_DIR": str(data_dir)},
    )
    compose.down()  # what a failed earlier run may have left
    yield Stack(compose, f"http://127.0.0.1:{port}")
    compose.down()


def test_up_without_a_checkpoint_stops_at_model_check(stack: Stack) -> None:
    result = stack.compose("up", "-d", check=False, label="compose up -d (no checkpoint)")
    output = result.stdout + result.stderr
    # Compose prints the failed dependency; its exit status is 0 or 1 depending on the
    # Compose version (2.40 exits 0), so what counts is that api was never started.
    assert 'service "model-check" didn\'t complete successfully' in output, output
    assert stack.compose.container_ids("api") == []  # `ps` lists running containers only
    created = stack.compose("ps", "--all", "--format", "json", "api", label="compose ps --all api")
    assert '"State":"created"' in created.stdout.replace(" ", ""), created.stdout
    logs = stack.compose("logs", "model-check", label="compose logs model-check").stdout
    assert "no checkpoint" in logs.lower() or "not found" in logs.lower(), logs
    assert "train" in logs, logs  # it says how to put one in place


def test_train_demo_then_up_serves_predictions(stack: Stack) -> None:
    stack.compose("--profile", "train", "run", "--rm", "train", "demo", "--output", CHECKPOINT,
                  label="compose run train demo")
    stack.compose("up", "-d", label="compose up -d")
    ready = wait_ready(stack.base_url)
    stack.model_ids.append(ready["model_id"])
    assert httpx.get(f"{stack.base_url}/health/live", timeout=5).status_code == 200

    answer = httpx.post(f"{stack.base_url}/v1/predict",
                        files={"file": ("plot.jpg", jpeg_bytes((640, 480)), "image/jpeg")},
                        timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_id"] == ready["model_id"]
    assert 0.0 <= body["probability"] <= 1.0

    batch = httpx.post(f"{stack.base_url}/v1/predict/batch", timeout=30, files=[
        ("files", ("a.jpg", jpeg_bytes((320, 240), seed=1), "image/jpeg")),
        ("files", ("b.txt", b"not a photo", "text/plain")),
    ])
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert results[0]["status"] == 200 and results[1]["status"] in (415, 422), results
    assert results[1]["error"]["code"] in ("unsupported_media_type", "corrupt_image"), results

    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    assert 'invasive_http_requests_total{method="POST",route="/v1/predict"' in metrics \
        or 'route="/v1/predict"' in metrics


def test_engine_conversion_is_kept_across_restarts(stack: Stack) -> None:
    # The default engine on CPU, converted at the first start into the engine-cache volume
    # (the root filesystem is read-only), and read back from it at the next.
    first = httpx.get(f"{stack.base_url}/v1/model", timeout=10).json()["engine"]
    assert first["requested"] == "auto" and first["fallback_reason"] is None, first
    assert first["name"] == "openvino", first
    stack.compose("restart", "api", label="compose restart api (engine cache)")
    wait_ready(stack.base_url, label="wait for /health/ready after restart")
    again = httpx.get(f"{stack.base_url}/v1/model", timeout=10).json()["engine"]
    print(f"[container-test] engine: first start {first}, after restart {again}")
    assert again["name"] == "openvino" and again["from_cache"] is True, again


def test_the_container_is_hardened(stack: Stack) -> None:
    container = stack.api_container()
    assert exec_in(container, "id", "-u").stdout.strip() == "10001"
    write = exec_in(container, "touch", "/opt/venv/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    models = exec_in(container, "touch", "/models/x", check=False)
    assert models.returncode != 0, "the model volume must be mounted read-only in api"
    assert exec_in(container, "touch", "/tmp/x").returncode == 0  # the tmpfs is writable
    host_config = inspect(container)["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    health = inspect(container)["State"].get("Health", {})
    assert health, "the image's health check is configured"


def test_model_update_takes_effect_on_restart(stack: Stack) -> None:
    # The README's "Updating the model": train again, check, restart api.
    stack.compose("--profile", "train", "run", "--rm", "train", "demo", "--epochs", "3",
                  "--output", CHECKPOINT, label="compose run train demo (new model)")
    check = stack.compose("run", "--rm", "model-check", label="compose run model-check")
    assert "resnet18" in check.stdout + check.stderr
    stack.compose("restart", "api", label="compose restart api")
    ready = wait_ready(stack.base_url, label="wait for /health/ready after restart")
    assert ready["model_id"] != stack.model_ids[-1], "restart did not load the new checkpoint"
    stack.model_ids.append(ready["model_id"])


def test_checkpoint_trained_on_the_host_is_imported(stack: Stack, demo_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    # A checkpoint written by this host's training code, with the permissions it writes
    # (0644 under the usual umask), copied in by the README's command as the image's user.
    host_file = tmp_path / "new.safetensors"
    host_file.write_bytes(demo_checkpoint.read_bytes())
    assert demo_checkpoint.stat().st_mode & stat.S_IROTH, "checkpoints must respect the umask"
    host_file.chmod(stat.S_IMODE(demo_checkpoint.stat().st_mode))
    expected = f"resnet18-{hashlib.sha256(host_file.read_bytes()).hexdigest()[:12]}"

    stack.compose("--profile", "train", "run", "--rm", "-v",
                  f"{host_file}:/import/model.safetensors:ro", "--entrypoint", "sh", "train",
                  "-c", "cp /import/model.safetensors /models/.incoming"
                  " && mv /models/.incoming /models/model.safetensors",
                  label="compose run train (import host checkpoint)")
    stack.compose("run", "--rm", "model-check", label="compose run model-check")
    stack.compose("restart", "api", label="compose restart api")
    ready = wait_ready(stack.base_url, label="wait for /health/ready after import")
    assert ready["model_id"] == expected


def test_down_removes_the_stack(stack: Stack) -> None:
    stack.compose("down", "--timeout", "45", label="compose down")
    assert stack.compose.container_ids("api") == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.base_url}/health/live", timeout=2)
