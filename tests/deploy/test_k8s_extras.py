"""deploy/k8s/extras: files applied by hand, outside the kustomizations (see the README).

Each is valid YAML; the Kubernetes objects validate strictly against the schemas; the
queue-depth HPA, its Prometheus Adapter rule and the ServiceMonitor name a metric, a Deployment,
a Service and a port that exist. (The pod in extras/ is checked for hardening in test_k8s.py.)
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from app.metrics import ServiceMetrics
from tests.deploy.kube import (
    EXTRAS,
    K8S_VERSIONS,
    OVERLAYS,
    api_objects,
    load_yaml_documents,
    only,
    render,
    unstarted_app,
)
from tests.deploy.parsing import REPO_ROOT


@pytest.mark.parametrize("path", EXTRAS, ids=lambda p: p.name)
def test_extras_are_valid(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents
    for doc in documents:
        group = doc.get("apiVersion", "").rpartition("/")[0]
        if "kind" in doc and ("." not in group or group.endswith(".k8s.io")):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_queue_depth_hpa_uses_a_real_metric_through_the_adapter_rule() -> None:
    metric_names = {m.name for m in ServiceMetrics().registry.collect()}
    scraped = unstarted_app().get("/metrics").text  # what Prometheus reads
    assert "\ninvasive_queue_depth " in scraped
    (hpa,) = load_yaml_documents(REPO_ROOT / "deploy/k8s/extras/hpa-queue-depth.yaml")
    objects, _, _ = api_objects("gpu")
    base_hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == base_hpa["metadata"]["name"], "replace it, never add one"
    assert hpa["spec"]["scaleTargetRef"] == base_hpa["spec"]["scaleTargetRef"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    assert name == "invasive_queue_depth" and name in metric_names
    adapter = REPO_ROOT / "deploy/k8s/extras/prometheus-adapter-values.yaml"
    (values,) = load_yaml_documents(adapter)
    rules = values["rules"]["custom"]
    assert any(r["name"]["as"] == name and name in r["seriesQuery"] for r in rules)


def test_service_monitor_selects_the_service_port() -> None:
    (monitor,) = load_yaml_documents(REPO_ROOT / "deploy/k8s/extras/servicemonitor.yaml")
    service = only(render(OVERLAYS["gpu"]), "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert "invasive_queue_depth" in unstarted_app().get(endpoint["path"]).text
