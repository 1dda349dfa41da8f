"""Tools the catalog and alert tests run that are not Python packages: the AsyncAPI
parser (npm, installed on demand into tools/asyncapi/node_modules from its lock file)
and Prometheus' promtool and prometheus (Debian's `prometheus` package; .ci/run
installs it when missing).

A missing tool skips its tests on a developer's machine, with how to get it; in CI
(the CI environment variable set) it fails them: CI must never pass by skipping.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASYNCAPI_TOOLS = REPO / "tools" / "asyncapi"


def missing(what: str, how: str) -> None:
    message = f"{what} is not available: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run this test)")
    pytest.skip(message)


def binary(name: str, how: str) -> str:
    found = shutil.which(name)
    if not found:
        missing(name, how)
    return found


PROMETHEUS_HOW = ("apt-get install -y --no-install-recommends prometheus (only its binaries are used: "
                  "see .ci/run, which installs it without starting the daemon)")


def promtool() -> str:
    return binary("promtool", PROMETHEUS_HOW)


def prometheus() -> str:
    return binary("prometheus", PROMETHEUS_HOW)


def asyncapi_validator() -> list[str]:
    """``node tools/asyncapi/validate.mjs``, with @asyncapi/parser installed by ``npm ci``
    from tools/asyncapi/package-lock.json when node_modules does not match the lock."""
    node = binary("node", "install Node.js 18 or later (apt-get install -y nodejs npm)")
    lock = ASYNCAPI_TOOLS / "package-lock.json"
    stamp = ASYNCAPI_TOOLS / "node_modules" / ".crossdock-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        npm = binary("npm", "install npm (apt-get install -y npm)")
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ASYNCAPI_TOOLS,
            capture_output=True, text=True, timeout=600, env={**os.environ, "SCARF_ANALYTICS": "false"})
        if proc.returncode != 0:
            missing("@asyncapi/parser", f"npm ci in {ASYNCAPI_TOOLS} failed:\n{proc.stderr[-2000:]}")
        stamp.write_text(digest)
    return [node, str(ASYNCAPI_TOOLS / "validate.mjs")]
