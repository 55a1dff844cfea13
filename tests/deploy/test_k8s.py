"""The Kubernetes manifests (deploy/k8s), checked without a cluster.

Every kustomization is rendered with `kubectl kustomize` and every object validated offline and
strictly (an unknown field fails) against the Kubernetes OpenAPI schemas bundled by
kubernetes-validate, for the oldest Kubernetes the README promises and the newest the package
knows. The other tests tie the manifests to what they deploy: probe paths are routes of the real
app, ports and uid are the image's, memory covers the service's budget, the grace period covers
its drain, every setting is a real Settings field, the Job runs a real training command.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.server import CLOSING_MAX_S
from tests.deploy.kube import (
    EXTRAS,
    K8S_VERSIONS,
    MIN_K8S,
    OVERLAYS,
    POD_KINDS,
    TRAINING,
    all_containers,
    api_objects,
    container,
    cpu_cores,
    diff_paths,
    load_yaml_documents,
    memory_bytes,
    only,
    pod_spec,
    port_number,
    prestop_seconds,
    render,
    service_settings,
    settings_from_env,
    training_argv,
    unstarted_app,
)
from tests.deploy.parsing import REPO_ROOT, dockerfile_stages
from training.cli import build_parser

KUSTOMIZATIONS = {f"overlays/{k}": p for k, p in OVERLAYS.items()} | {
    f"training/{k}": p for k, p in TRAINING.items()
}
RUNTIME = next(stage for stage in dockerfile_stages() if stage.name == "runtime")
APP_UID = int(next(i.args for i in RUNTIME.all("ARG") if i.args.startswith("APP_UID="))[8:])
MIB = 2**20
# Memory a replica needs beyond INVASIVE_MEMORY_BUDGET_MB (base/deployment.yaml, overlays/gpu):
MEASURED_NON_BUDGET_MIB = 1536  # the 1.94 GB CPU peak with 2+1 decode processes, less 384 MiB
DECODE_PROCESS_MIB = 100  # each light decode process beyond the measured two (estimate)
CUDA_HOST_MIB = 2048  # CUDA context and kernels in host memory (estimate)


def _status(path: str) -> int:
    return unstarted_app().get(path).status_code


def _objects(name: str) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[name])


def _pod_objects(source: str) -> list[dict[str, Any]]:
    """The objects with a pod template in a kustomization, or in a file of extras/."""
    if source in KUSTOMIZATIONS:
        objects = _objects(source)
    else:
        objects = load_yaml_documents(REPO_ROOT / "deploy/k8s" / source)
    return [o for o in objects if o.get("kind") in POD_KINDS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_and_validates_strictly(name: str, version: str) -> None:
    objects = _objects(name)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the field's path
        assert obj["metadata"]["namespace"] == "invasive-species", obj["metadata"]["name"]
        assert obj["kind"] != "Secret", "no secret values in the repository"


def test_validation_is_strict_enough_to_catch_a_typo() -> None:
    deployment = only(render(OVERLAYS["cpu"]), "Deployment")
    container(deployment, "api")["readinesProbe"] = {"httpGet": {"path": "/", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_K8S, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_real_health_routes_on_the_service_port(overlay: str) -> None:
    objects, deployment, api = api_objects(overlay)
    settings = service_settings(objects)
    assert settings.host == "0.0.0.0", "kubelet probes the pod IP: listen on every interface"
    (port,) = api["ports"]
    assert port["containerPort"] == settings.port
    paths = {}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = api[kind]["httpGet"]
        assert port_number(api, get["port"]) == settings.port, kind
        paths[kind] = get["path"]
    # Not ready (503) while the model is not loaded, so neither start-up nor readiness passes
    # early; alive (200) all the same, so a replica that is draining or restarting a worker is
    # taken out of the Service but never killed.
    assert _status(paths["startupProbe"]) == 503
    assert _status(paths["readinessProbe"]) == 503
    assert _status(paths["livenessProbe"]) == 200
    assert (paths["readinessProbe"], paths["livenessProbe"]) == ("/health/ready", "/health/live")
    startup = api["startupProbe"]
    window = (
        startup.get("initialDelaySeconds", 0)
        + startup["periodSeconds"] * startup["failureThreshold"]
    )
    assert window >= 120, "a GPU start (CUDA, checkpoint read, warm-up) takes up to ~2 minutes"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert _status(annotations["prometheus.io/path"]) == 200


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_drain_and_requests_in_flight(overlay: str) -> None:
    objects, deployment, api = api_objects(overlay)
    settings = service_settings(objects)
    needed = (
        prestop_seconds(api)
        + settings.drain_seconds
        + CLOSING_MAX_S
        + settings.request_timeout_s
        + settings.decode_timeout_s  # margin for the lifespan shutdown (decoders are killed)
    )
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= needed, f"grace {grace} s < {needed} s (deployment.yaml explains the sum)"
    assert prestop_seconds(api) > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_limit_covers_the_budget_plus_the_process(overlay: str) -> None:
    objects, _, api = api_objects(overlay)
    settings = service_settings(objects)
    limits, requests = api["resources"]["limits"], api["resources"]["requests"]
    extra_decoders = max(0, settings.decode_processes - 2)
    needed_mib = (
        settings.memory_budget_mb
        + settings.memory_reserve_bytes / MIB  # on top of the budget, for ordinary photos
        + MEASURED_NON_BUDGET_MIB
        + DECODE_PROCESS_MIB * extra_decoders
        + (CUDA_HOST_MIB if "nvidia.com/gpu" in limits else 0)
    )
    assert memory_bytes(limits["memory"]) >= needed_mib * MIB, (limits["memory"], needed_mib)
    assert memory_bytes(requests["memory"]) == memory_bytes(limits["memory"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_threads_and_decoders_are_sized_to_the_pod_not_the_node(overlay: str) -> None:
    # The service's "0 = one per CPU" counts the node's CPUs inside a pod.
    objects, _, api = api_objects(overlay)
    settings = service_settings(objects)
    cpus = cpu_cores(api["resources"]["limits"]["cpu"])
    assert 1 <= settings.torch_threads <= cpus
    assert 1 <= settings.decode_processes <= cpus


def test_overlays_set_the_device_and_gpu_only_where_they_should() -> None:
    cpu_objects, cpu_deployment, cpu_api = api_objects("cpu")
    gpu_objects, gpu_deployment, gpu_api = api_objects("gpu")
    assert service_settings(cpu_objects).device == "cpu"
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu_objects)
    assert service_settings(gpu_objects).device == "cuda"
    assert gpu_api["resources"]["limits"]["nvidia.com/gpu"] == 1
    tolerations = pod_spec(gpu_deployment)["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_gpu_and_cpu_overlays_differ_only_where_expected() -> None:
    def keyed(objects: list[dict[str, Any]]) -> dict[str, Any]:
        configmap = only(objects, "ConfigMap")["metadata"]["name"]  # name-<content hash>
        text = yaml.safe_dump(objects).replace(configmap, "invasive-api-HASH")
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load(text)}

    cpu, gpu = keyed(render(OVERLAYS["cpu"])), keyed(render(OVERLAYS["gpu"]))
    assert cpu.keys() == gpu.keys()
    differences = {f"{key}{path}" for key in cpu for path in diff_paths(cpu[key], gpu[key])}
    pod = "Deployment/invasive-api.spec.template.spec"
    required = {
        "ConfigMap/invasive-api-HASH.data.INVASIVE_DEVICE",
        f"{pod}.containers[api].resources",
        f"{pod}.tolerations",
    }
    allowed = (
        required
        | {
            f"ConfigMap/invasive-api-HASH.data.INVASIVE_{name}"
            for name in (
                "DECODE_PROCESSES",
                "HEAVY_DECODE_PROCESSES",
                "TORCH_THREADS",
                "MEMORY_BUDGET_MB",
            )
        }
        | {f"{pod}.nodeSelector", f"{pod}.affinity"}
    )
    unexpected = {d for d in differences if not any(d.startswith(a) for a in allowed)}
    assert not unexpected, f"the overlays also differ in {sorted(unexpected)}"
    for path in required:
        assert any(d.startswith(path) for d in differences), f"no difference in {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_and_secret_are_real_settings(overlay: str) -> None:
    objects, _, api = api_objects(overlay)
    service_settings(objects)  # every key a Settings field, every value valid for it
    env = {e["name"]: e for e in api.get("env", [])}
    assert not [n for n in env if n.startswith("INVASIVE_") and "valueFrom" not in env[n]], (
        "settings belong in the ConfigMap"
    )
    settings_from_env({name: "x" for name in env if name.startswith("INVASIVE_")})
    key = env["INVASIVE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "invasive-api-key", "key": "api-key", "optional": True}
    (source,) = api["envFrom"]
    assert source["configMapRef"]["name"] == only(objects, "ConfigMap")["metadata"]["name"]


@pytest.mark.parametrize("source", [*KUSTOMIZATIONS, *(f"extras/{p.name}" for p in EXTRAS)])
def test_every_pod_is_hardened_and_sized(source: str) -> None:
    objects = _pod_objects(source)
    if source in KUSTOMIZATIONS:
        assert objects, f"{source} renders no pod"
    for obj in objects:
        _check_pod(obj)


def _check_pod(obj: dict[str, Any]) -> None:
    spec = pod_spec(obj)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert pod_security[key] == APP_UID, f"{key}: the image's user is {APP_UID} (Dockerfile)"
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for ctr in all_containers(spec):
        security = ctr["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "add" not in security["capabilities"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= ctr["resources"][part].keys(), f"{ctr['name']} {part}"
        for mount in ctr.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{ctr['name']} mounts missing {mount['name']}"
        mounts = {m["mountPath"]: volumes[m["name"]] for m in ctr.get("volumeMounts", [])}
        if obj["kind"] != "Pod":  # Python and multiprocessing need a writable /tmp
            assert "emptyDir" in mounts["/tmp"]
    assert RUNTIME.all("USER")[-1].args == "${APP_UID}:${APP_UID}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_service_hpa_and_pdb_fit_together(overlay: str) -> None:
    objects, deployment, api = api_objects(overlay)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns replicas"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert api["command"] == RUNTIME.all("CMD")[-1].exec_form() == ["invasive-api"]
    service = only(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 80)
    assert port_number(api, port["targetPort"]) == service_settings(objects).port
    train_labels = only(render(TRAINING["gpu"]), "Job")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
        assert not selector.items() <= train_labels.items(), "would select training pods"
    hpa = only(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # a PDB of maxUnavailable 1 then keeps one serving
    assert only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod_spec(deployment)["volumes"]}
    models = next(m for m in api["volumeMounts"] if m["mountPath"] == "/models")
    assert models["readOnly"] is True and claims[models["name"]]["readOnly"] is True
    claim_names = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims[models["name"]]["claimName"] in claim_names
    assert Path(service_settings(objects).checkpoint).parent == Path("/models")


@pytest.mark.parametrize("variant", TRAINING)
def test_training_job_runs_a_real_command_into_the_served_path(variant: str) -> None:
    job = only(render(TRAINING[variant]), "Job")
    ctr = container(job, "train")
    args, processes = training_argv(ctr)
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"invasive-train rejects {args}")
    assert parsed.command in {"fit", "demo"}
    served = api_objects("cpu")
    assert str(parsed.output) == str(service_settings(served[0]).checkpoint)
    assert processes == ctr["resources"]["limits"].get("nvidia.com/gpu", 1)
    assert ("nvidia.com/gpu" in ctr["resources"]["limits"]) == (variant != "demo")
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(job)["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert not mounts["/models"].get("readOnly"), "training writes the checkpoint"
    served_claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(served[1])["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims[mounts["/models"]["name"]] == served_claims["models"]
    if parsed.command == "fit":
        assert claims[mounts[str(parsed.data)]["name"]] == "invasive-data"
    assert ctr["image"] == served[2]["image"], "training and service run the same image"
    assert pod_spec(job)["restartPolicy"] == "Never"


SECTION = re.search(
    r"<!-- section:kubernetes -->(.*?)<!-- /section:kubernetes -->",
    (REPO_ROOT / "README.md").read_text(),
    re.S,
).group(1)


def test_readme_commands_name_real_paths_and_objects() -> None:
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", SECTION, re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    paths = [path for c in commands for path in re.findall(r"deploy/[\w./-]*\w", c)]
    assert paths
    for path in paths:
        assert (REPO_ROOT / path).exists(), path
    text = " ".join(commands)
    for step in (
        "apply -k deploy/k8s/overlays/gpu",
        "apply -k deploy/k8s/overlays/cpu",
        "apply -k deploy/k8s/training/gpu",
        "rollout restart deployment/invasive-api",
        "create secret generic invasive-api-key",
        "--from-literal=api-key=",
        "apply -f deploy/k8s/extras/hpa-queue-depth.yaml",
        "docker push",
    ):
        assert step in text, step
    assert f"Kubernetes {MIN_K8S}" in SECTION
