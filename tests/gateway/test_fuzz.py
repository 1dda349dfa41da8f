"""Property-based fuzzing of the running gateway from its own /openapi.json
with schemathesis: every check, authenticated, a CI-sized budget. Zero server
errors and zero schema violations, or the test fails with schemathesis' report."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.governance import SCOPES

from .conftest import Gateway

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("CROSSDOCK_FUZZ_EXAMPLES", "60"))
SEED = os.environ.get("CROSSDOCK_FUZZ_SEED", "20261127")


def st_binary() -> str:
    return str(Path(sys.executable).with_name("st"))


def test_openapi_document_matches_the_routes(gateway: Gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    assert {"/v1/orders", "/v1/orders/{order_id}", "/v1/orders/{order_id}:cancel", "/v1/returns",
            "/v1/returns/{return_id}", "/v1/availability", "/v1/shipping-options", "/v1/admin/dead-letters",
            "/v1/admin/dead-letters/{dead_letter_id}:replay", "/v1/admin/reconciliations",
            "/v1/admin/audit", "/healthz", "/readyz"} <= paths
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    post = spec["paths"]["/v1/orders"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])
    assert "application/problem+json" in post["responses"]["422"]["content"]


def test_schemathesis_finds_no_failure(gateway: Gateway, tmp_path):
    # The fuzzer gets its own client with a high quota (429s would only slow it down).
    token = asyncio.run(gateway.new_client(list(SCOPES), rate=10_000))
    cmd = [st_binary(), "--config-file", str(CONFIG), "run", f"{gateway.url}/openapi.json",
           "--checks", "all", "--header", f"Authorization: Bearer {token}",
           "--max-examples", str(EXAMPLES), "--seed", SEED, "--no-color",
           "--report", "junit", "--report-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    summary = out[out.find("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    print(summary)  # shown with -s / on failure: cases generated, failures
    assert proc.returncode == 0, out[-20_000:]
    cases = re.search(r"(\d+) generated", out)
    assert cases and int(cases.group(1)) > 100, summary
    assert "Server error" not in out and not re.search(r"[1-9]\d* (unique )?failures?", summary), summary
