"""Scale-out on one host (docker-compose.scale.yml): two `api` replicas behind the HAProxy
proxy, under a bounded load loop. Both replicas serve; a replica killed mid-load costs no
client request and rejoins when it is back; a rolling model update under load ends with every
replica on the new model and no failed request. Each load's request counts are printed."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.app.images import jpeg_bytes
from tests.container.compose import (
    ComposeProject,
    inspect,
    replica_metric,
    replica_ready,
    wait_ready,
)
from tests.container.conftest import free_port
from tests.container.engine import REPO_ROOT, run
from tests.container.load import LoadLoop
from tests.container.timeline import step

CHECKPOINT = "/models/model.safetensors"
PREDICTIONS = ("invasive_http_requests_total", 'route="/v1/predict"', 'status="200"')


class Cluster:
    def __init__(self, compose: ComposeProject, base_url: str) -> None:
        self.compose, self.base_url = compose, base_url
        self.photo = jpeg_bytes((640, 480), seed=3)

    def replicas(self) -> list[str]:
        return sorted(self.compose.container_ids("api"))

    def predictions_served(self) -> dict[str, float]:
        return {c: replica_metric(c, *PREDICTIONS) for c in self.replicas()}

    def wait_all_ready(self, timeout: float = 300) -> dict[str, str]:
        """model_id of every replica, once each answers ready (asked from inside it)."""
        with step("wait for every replica ready"):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                answers = {c: replica_ready(c) for c in self.replicas()}
                if answers and all(answers.values()):
                    return {c: a["model_id"] for c, a in answers.items()}
                time.sleep(1)
        raise AssertionError(f"replicas not all ready after {timeout} s")

    def load(self, **kwargs: object) -> LoadLoop:
        return LoadLoop(f"{self.base_url}/v1/predict", self.photo, **kwargs)


@pytest.fixture(scope="module")
def cluster(docker_images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Cluster]:
    service_image, proxy_image = docker_images
    port = free_port()
    compose = ComposeProject(
        "invasive-ct-scale",
        ["docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.scale.yml"],
        {"DEPLOY_IMAGE": service_image, "DEPLOY_PROXY_IMAGE": proxy_image,
         "DEPLOY_PORT": str(port), "DEPLOY_DATA_DIR": str(tmp_path_factory.mktemp("data"))},
    )
    compose.down()
    compose("--profile", "train", "run", "--rm", "train", "demo", "--output", CHECKPOINT,
            label="compose run train demo")
    compose("up", "-d", "--scale", "api=2", label="compose up -d --scale api=2")
    cluster = Cluster(compose, f"http://127.0.0.1:{port}")
    wait_ready(cluster.base_url, label="wait for the proxy to answer ready")
    cluster.wait_all_ready()
    yield cluster
    compose.down()


def test_the_proxy_spreads_requests_over_both_replicas(cluster: Cluster) -> None:
    assert len(cluster.replicas()) == 2
    before = cluster.predictions_served()
    with cluster.load(clients=4, max_requests=200, max_seconds=120) as loop:
        result = loop.wait()
    after = cluster.predictions_served()
    served = {c: after[c] - before[c] for c in after}
    print(f"[container-test] spread: {result.summary()}; predictions per replica {served}")
    assert result.failures == {} and result.ok == result.sent == 200
    assert all(n >= 0.2 * result.sent for n in served.values()), served
    assert sum(served.values()) == result.sent


def test_the_proxy_refuses_oversized_requests_itself(cluster: Cluster) -> None:
    port = int(cluster.base_url.rsplit(":", 1)[1])
    before = cluster.predictions_served()
    # A declared body beyond anything the service could accept: 413 from HAProxy at once,
    # without waiting for (or forwarding) a byte of it.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        status_line = conn.recv(200).split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, status_line
    # More headers than the proxy's cap (100).
    too_many = {f"X-Filler-{i}": "y" for i in range(120)}
    answer = httpx.get(f"{cluster.base_url}/health/live", headers=too_many, timeout=10)
    assert answer.status_code == 400, answer.status_code
    # A client that never finishes its headers is cut by the proxy, not by Python.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        reply = conn.recv(200)
        waited = time.monotonic() - start
    assert b" 408 " in reply.split(b"\r\n", 1)[0] or reply == b"", reply
    assert 10 < waited < 25, waited
    assert cluster.predictions_served() == before, "nothing of these reached a replica"


def test_killing_a_replica_mid_load_loses_no_request(cluster: Cluster) -> None:
    victim, survivor = cluster.replicas()
    with cluster.load(clients=4, max_requests=50_000, max_seconds=300) as loop:
        time.sleep(5)
        with step("docker kill one replica mid-load"):
            run(["docker", "kill", victim], timeout=60)
        sent_at_kill = loop.result.sent
        time.sleep(5)
        state = inspect(victim)["State"]
        if not (state["Running"] or state["Restarting"]):
            # `docker kill` counts as stopping it by hand, so the restart policy leaves it be;
            # an operator (or an orchestrator) starts it again.
            run(["docker", "start", victim], timeout=60)
        with step("killed replica back and ready"):
            deadline = time.monotonic() + 300
            while replica_ready(victim) is None:
                assert time.monotonic() < deadline, "the killed replica never came back"
                time.sleep(1)
        rejoined_at = replica_metric(victim, *PREDICTIONS)
        time.sleep(10)  # load goes on: the replica must get its share again
        served_after_rejoin = replica_metric(victim, *PREDICTIONS) - rejoined_at
    result = loop.result
    print(f"[container-test] kill: {result.summary()}; {sent_at_kill} sent before the kill; "
          f"{served_after_rejoin:.0f} served by the restarted replica after it rejoined")
    assert result.sent > sent_at_kill + 20, "the load did not go on through the kill"
    assert result.failures == {}, result.summary()
    assert served_after_rejoin > 0, "the restarted replica got no traffic after it rejoined"
    assert survivor in cluster.replicas()


def test_rolling_model_update_under_load(cluster: Cluster) -> None:
    old = set(cluster.wait_all_ready().values())
    assert len(old) == 1
    cluster.compose("--profile", "train", "run", "--rm", "train", "demo", "--epochs", "3",
                    "--output", CHECKPOINT, label="compose run train demo (new model)")
    with cluster.load(clients=4, max_requests=50_000, max_seconds=400) as loop:
        time.sleep(3)
        with step("deploy/rolling-update.sh under load"):
            update = subprocess.run(
                ["bash", str(REPO_ROOT / "deploy/rolling-update.sh")], cwd=REPO_ROOT,
                env={**cluster.compose.env, "COMPOSE": " ".join(cluster.compose.command)},
                capture_output=True, text=True, timeout=900,
            )
        time.sleep(3)
    result = loop.result
    print(update.stdout + update.stderr)
    print(f"[container-test] rolling update: {result.summary()}")
    assert update.returncode == 0
    new = set(cluster.wait_all_ready().values())
    assert len(new) == 1 and new != old, (old, new)
    assert result.failures == {}, result.summary()
    assert set(result.model_ids) == old | new, "the load saw both models, old then new"


def test_scale_to_three_and_back(cluster: Cluster) -> None:
    cluster.compose("up", "-d", "--no-recreate", "--scale", "api=3",
                    label="compose up --scale api=3")
    cluster.wait_all_ready()
    assert len(cluster.replicas()) == 3
    before = cluster.predictions_served()
    with cluster.load(clients=6, max_requests=150, max_seconds=120) as loop:
        result = loop.wait()
    after = cluster.predictions_served()
    served = {c: after[c] - before.get(c, 0) for c in after}
    print(f"[container-test] scale 3: {result.summary()}; per replica {served}")
    assert result.failures == {}
    assert all(n > 0 for n in served.values()), served
    cluster.compose("up", "-d", "--no-recreate", "--scale", "api=2",
                    label="compose up --scale api=2")
    assert len(cluster.replicas()) == 2
