"""`crossdock` against a running mesh, as an operator runs it: API clients through
the gateway's admin API with the operator token the launcher made, and every
command through the runtime's channel factory, which takes an address listing
several replicas."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests.helpers import eventually

from .conftest import Gateway, Records

pytestmark = pytest.mark.e2e


def cli_env(gw_mesh, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSDOCK_")}
    env.update({f"CROSSDOCK_{n.upper()}_ADDR": gw_mesh.addr(n)
                for n in ("erp", "wms", "tms", "ordertoship", "returns", "gateway")})
    return {**env, "CROSSDOCK_DATA_DIR": str(gw_mesh.data_dir), "COLUMNS": "250", **extra}


async def crossdock(env: dict, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=60)


async def test_clients_create_list_revoke_through_the_gateway(gw_mesh, gateway: Gateway,
                                                               http: httpx.AsyncClient):
    env = cli_env(gw_mesh)
    made = await crossdock(env, "clients", "create", "--channel", "cs-desk",
                           "--scopes", "orders:read,lookups", "--customer", gateway.a.customer_id,
                           "--rate", "7")
    assert made.returncode == 0, made.stdout + made.stderr
    token = made.stdout.strip().splitlines()[-1]
    client_id = re.search(r"client (cl_[0-9a-f]+)", made.stdout).group(1)
    assert token.startswith(f"cdk_{client_id}.")
    assert (await http.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    listed = await crossdock(env, "clients", "list")
    assert listed.returncode == 0 and client_id in listed.stdout and "cs-desk" in listed.stdout
    assert token.split(".")[1] not in listed.stdout
    revoked = await crossdock(env, "clients", "revoke", client_id)
    assert revoked.returncode == 0, revoked.stdout

    async def refused():
        return (await http.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})).status_code == 401

    await eventually(refused, timeout=10, what="the revocation")
    again = await crossdock(env, "clients", "revoke", client_id)
    assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stdout
    bad = await crossdock(env, "clients", "create", "--channel", "x", "--scopes", "root")
    assert bad.returncode == 1 and "scopes[0]" in bad.stdout


async def test_without_the_operator_token_the_cli_says_where_it_looks(gw_mesh, tmp_path):
    env = cli_env(gw_mesh, CROSSDOCK_DATA_DIR=str(tmp_path))
    r = await crossdock(env, "clients", "list")
    assert r.returncode == 2 and "CROSSDOCK_GATEWAY_OPERATOR_TOKEN" in r.stdout, r.stdout
    # A wrong one is refused by the gateway itself.
    forged = {**env, "CROSSDOCK_GATEWAY_OPERATOR_TOKEN": "cdk_operator." + "x" * 43}
    r = await crossdock(forged, "clients", "list")
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stdout


async def test_an_address_listing_replicas_works_for_every_kind_of_command(gw_mesh, a_records: Records):
    def twice(name: str) -> str:
        return f"{gw_mesh.addr(name)},{gw_mesh.addr(name)}"

    env = cli_env(gw_mesh, **{f"CROSSDOCK_{n.upper()}_ADDR": twice(n)
                              for n in ("erp", "wms", "ordertoship", "returns", "gateway")})
    for args, expect in ((["order", a_records.order_id], a_records.order_id),
                         (["orders", "--limit", "500"], a_records.order_id),
                         (["returns", "show", a_records.return_id], a_records.return_id),
                         (["dlq", "list"], "dead letter"),
                         (["stock"], "WMS on hand"),
                         (["replenishment", "list"], "replenishment"),
                         (["clients", "list"], "API clients"),
                         (["status", "--once"], "ordertoship")):
        r = await crossdock(env, *args)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
        assert expect in r.stdout, (args, r.stdout[-2000:])
        assert "errors resolving" not in r.stdout + r.stderr
