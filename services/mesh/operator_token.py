"""The operator token: the first administrative credential of a deployment.

The gateway accepts ``cdk_operator.<secret>`` as an internal client with every
scope when ``CROSSDOCK_GATEWAY_OPERATOR_TOKEN`` holds it (Kubernetes: the
gateway's Secret, made by deploy/k8s/create-secrets.sh). On one machine the
launcher (`crossdock up`, the tests' meshes) makes one on first start, keeps it
in ``<data_dir>/operator.token`` (mode 0600) and gives it to the gateway; the
CLI reads the same variable, else that file. With it, an operator creates the
API clients everything else uses (`crossdock clients create`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .secretfile import create_once

VARIABLE = "CROSSDOCK_GATEWAY_OPERATOR_TOKEN"
FILE = "operator.token"
PREFIX = "cdk_operator."


def make() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def is_well_formed(token: str) -> bool:
    return token.startswith(PREFIX) and len(token) - len(PREFIX) >= 32 and "." not in token[len(PREFIX):]


def ensure(data_dir: Path) -> str:
    """The data folder's operator token, made on first use (one machine)."""
    return create_once(data_dir / FILE, make)


def find(data_dir: Path) -> str:
    """What the CLI presents: the variable, else the data folder's file ("" when neither)."""
    if token := os.environ.get(VARIABLE, "").strip():
        return token
    try:
        return (data_dir / FILE).read_text().strip()
    except (FileNotFoundError, PermissionError):
        return ""
