"""deploy/k8s/components/monitoring added to the prod overlay: it renders, adds exactly a
PrometheusRule and a PodMonitor in the crossdock namespace, the PodMonitor scrapes every
service the way the rules expect, and the PrometheusRule's rules pass promtool.

The prometheus-operator's CRD schemas are not in kubernetes-validate's bundle (only
Kubernetes' own kinds are): these two objects are checked by promtool and by the
structural checks below instead; the test asserts that the bundle indeed lacks them,
so that it says so when that changes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from services.mesh import monitoring
from tests.deploy.conftest import K8S, kustomize, load_docs
from tests.external_tools import promtool

CRD_KINDS = {"PrometheusRule", "PodMonitor"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """(prod with the component, prod alone)."""
    folder = tmp_path_factory.mktemp("overlay")
    rel = Path(os.path.relpath(K8S, folder))
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # What an overlay that lists the component gets: its namespace.
        "namespace": "crossdock",
        "resources": [str(rel / "overlays" / "prod")],
        "components": [str(rel / "components" / "monitoring")],
    }))
    return load_docs(kustomize(folder)), load_docs(kustomize(K8S / "overlays" / "prod"))


def _key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_the_component_adds_a_prometheusrule_and_a_podmonitor_and_changes_nothing_else(rendered):
    with_component, prod = rendered
    added = {_key(d) for d in with_component} - {_key(d) for d in prod}
    assert added == {("PrometheusRule", "crossdock"), ("PodMonitor", "crossdock")}
    for doc in with_component:
        if doc["kind"] in CRD_KINDS:
            assert doc["metadata"]["namespace"] == "crossdock"
    assert [d for d in with_component if d["kind"] not in CRD_KINDS] == prod


def test_the_operator_kinds_are_not_in_the_schema_bundle_so_promtool_checks_the_rules(rendered, tmp_path):
    with_component, _ = rendered
    version = kv_utils.latest_version()
    for doc in (d for d in with_component if d["kind"] in CRD_KINDS):
        with pytest.raises(kv_utils.SchemaNotFoundError):
            kubernetes_validate.validate(doc, version, strict=True)
    (rule,) = [d for d in with_component if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(monitoring.RULES.read_text())["groups"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run([promtool(), "check", "rules", str(spec)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_podmonitor_scrapes_every_service_as_the_rules_expect(rendered):
    with_component, _ = rendered
    (monitor,) = [d for d in with_component if d["kind"] == "PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == monitoring.JOB
    assert relabel["service"]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    services = [d for d in with_component if d["kind"] == "Deployment"
                and d["metadata"].get("labels", {}).get("crossdock.io/role") == "service"]
    assert services
    for deployment in services:
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]
        assert labels["app.kubernetes.io/name"] == deployment["metadata"]["name"]
        ports = {p["name"]: p for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports, f"{deployment['metadata']['name']} has no {endpoint['port']} port"
        assert template["metadata"]["annotations"]["prometheus.io/path"] == endpoint["path"]
