"""deploy/k8s/components/erp-tryton, rendered on the dev overlay (in a copy of
deploy/k8s, with placeholder credentials) and validated offline like the overlays:
schemas (strict), a hardened trytond with probes and resources, its Secret as files,
the ERP switched to the Tryton adapter, and NetworkPolicies that let only the ERP
reach trytond and trytond only its database."""

from __future__ import annotations

import shutil

import kubernetes_validate
import pytest

from .conftest import K8S, Rendered, kustomize, load_docs

EXAMPLE = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: crossdock
resources:
  - ../dev
components:
  - ../../components/erp-tryton
secretGenerator:
  - name: tryton-credentials
    literals:
      - CROSSDOCK_ERP_TRYTON_DATABASE_URL=postgresql://postgres:dev-only-placeholder@postgres:5432/postgres
      - CROSSDOCK_ERP_TRYTON_PASSWORD=dev-only-placeholder
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root)
    (root / "overlays" / "tryton").mkdir()
    (root / "overlays" / "tryton" / "kustomization.yaml").write_text(EXAMPLE)
    text = kustomize(root / "overlays" / "tryton")
    return Rendered("tryton", text, load_docs(text))


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    errors = []
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, "1.37", strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_trytond_is_a_hardened_workload_with_probes_on_its_own_secret(rendered):
    trytond = rendered.get("Deployment", "trytond")
    spec = trytond["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"][:3] == ["crossdock", "erp", "tryton"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"]["port"] == 8000
    assert c["resources"]["limits"] and c["resources"]["requests"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"]
    assert not any("TRYTON_PASSWORD" in e["name"] or "DATABASE_URL" in e["name"] for e in c.get("env", []))
    secrets = [v for v in spec["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"].rsplit("-", 1)[0] for v in secrets] == ["tryton-credentials"]
    assert rendered.get("Service", "trytond")["spec"]["ports"][0]["port"] == 8000


def test_the_erp_runs_its_tryton_adapter_against_the_trytond_service(rendered):
    erp = rendered.get("Deployment", "erp")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in erp["containers"][0]["env"]}
    assert env["CROSSDOCK_ERP_BACKEND"] == "tryton" and env["CROSSDOCK_ERP_TRYTON_URL"] == "http://trytond:8000/"
    (tryton,) = [v for v in erp["volumes"] if v["name"] == "tryton-secrets"]
    assert [i["key"] for i in tryton["secret"]["items"]] == ["CROSSDOCK_ERP_TRYTON_PASSWORD"]


def test_only_the_erp_reaches_trytond_and_trytond_only_its_database(rendered):
    policy = rendered.get("NetworkPolicy", "trytond-ingress")["spec"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "erp"}}}]
    assert [p["port"] for p in ingress["ports"]] == [8000]
    assert [(e["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], e["ports"][0]["port"])
            for e in policy["egress"]] == [("postgres", 5432)]
    egress = rendered.get("NetworkPolicy", "erp-to-trytond")["spec"]
    assert egress["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "erp"}
    assert egress["egress"][0]["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "trytond"}

