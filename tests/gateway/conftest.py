"""The gateway in front of a real mesh (every service a process, nats-server,
SQLite stores), reached over real HTTP (httpx) and gRPC.

Two tenants (customers with their own items and warehouse), each with API
clients of the scopes the tests need, and an internal admin client: all made
through the gateway's own admin API (ApiClientService) with the operator token
the launcher made for the mesh, as `crossdock clients` does.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from crossdock.admin.v1 import api_clients_pb2 as cpb
from crossdock.admin.v1 import api_clients_pb2_grpc
from gateway.governance import SCOPES
from services.mesh import operator_token
from tests.e2e.conftest import Stubs, World, make_world, start_mesh
from tests.helpers import eventually


@dataclass
class Tenant:
    world: World
    tokens: dict[str, str] = field(default_factory=dict)  # label -> token

    @property
    def customer_id(self) -> str:
        return self.world.customer_id

    def auth(self, label: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[label]}"}


async def create_client(grpc_addr: str, operator: str, *, name: str = "test", channel: str = "tests",
                        customer: str = "", scopes: list[str], rate: float = 0) -> str:
    async with grpc.aio.insecure_channel(grpc_addr) as ch:
        r = await api_clients_pb2_grpc.ApiClientServiceStub(ch).CreateApiClient(
            cpb.CreateApiClientRequest(name=name, channel=channel, customer_id=customer, scopes=scopes,
                                       rate_limit=rate),
            metadata=(("authorization", f"Bearer {operator}"),), timeout=10)
    return r.token


@dataclass
class Gateway:
    url: str
    grpc_addr: str
    a: Tenant
    b: Tenant
    admin_token: str
    operator_token: str
    data_dir: Path = Path()

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def new_client(self, scopes: list[str], *, customer: str = "", rate: float = 0) -> str:
        return await create_client(self.grpc_addr, self.operator_token, customer=customer, scopes=scopes,
                                   rate=rate)

    async def revoke(self, token: str) -> None:
        async with grpc.aio.insecure_channel(self.grpc_addr) as ch:
            await api_clients_pb2_grpc.ApiClientServiceStub(ch).RevokeApiClient(
                cpb.RevokeApiClientRequest(client_id=token.split(".")[0].removeprefix("cdk_")),
                metadata=(("authorization", f"Bearer {self.operator_token}"),), timeout=10)


@pytest.fixture(scope="package")
def gw_mesh(tmp_path_factory):
    m = start_mesh(tmp_path_factory)
    yield m
    m.stop()


@pytest.fixture(scope="package")
def gateway(gw_mesh) -> Gateway:
    operator = operator_token.ensure(gw_mesh.data_dir)  # what the launcher gave the gateway
    addr = gw_mesh.addr("gateway")

    async def setup() -> Gateway:
        stubs = Stubs(gw_mesh)
        try:
            wa, wb = await make_world(stubs), await make_world(stubs)
        finally:
            await stubs.close()
        tenants = []
        for w in (wa, wb):
            t = Tenant(w)
            non_admin = [s for s in SCOPES if s != "admin"]
            t.tokens["all"] = await create_client(addr, operator, name="all", channel="ecommerce",
                                                  customer=w.customer_id, scopes=non_admin)
            # Lacks every scope a route needs (for the 403 column of the matrix).
            t.tokens["none"] = await create_client(addr, operator, name="none", channel="ecommerce",
                                                   customer=w.customer_id, scopes=[])
            # A tenant-bound key with admin scope must still not reach operations.
            t.tokens["admin"] = await create_client(addr, operator, name="tenant-admin", channel="ecommerce",
                                                    customer=w.customer_id, scopes=list(SCOPES))
            tenants.append(t)
        admin = await create_client(addr, operator, name="ops", channel="ops", scopes=list(SCOPES))
        return Gateway(gw_mesh.http_url(), addr, tenants[0], tenants[1], admin, operator, gw_mesh.data_dir)

    return asyncio.run(setup())


@pytest.fixture
async def http(gateway):
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def order_body(t: Tenant, qty: int = 1, **kw) -> dict:
    return {"lines": [{"sku": t.world.skus[0], "quantity": qty}], "warehouse_id": t.world.warehouse_id, **kw}


async def submit(http: httpx.AsyncClient, t: Tenant, qty: int = 1, key: str | None = None) -> httpx.Response:
    return await http.post("/v1/orders", json=order_body(t, qty),
                           headers={**t.auth(), "Idempotency-Key": key or str(uuid.uuid4())})


@dataclass(frozen=True)
class Records:
    """A tenant's own shipped order and a return against it, made through the gateway."""

    order_id: str
    return_id: str


def _shipped_order_with_a_return(gateway: Gateway, t: Tenant) -> Records:
    async def make() -> Records:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            r = await submit(http, t)
            assert r.status_code == 201, r.text
            order_id = r.json()["order_id"]

            async def shipped():
                o = (await http.get(f"/v1/orders/{order_id}", headers=t.auth())).json()
                return o["status"] in ("SHIPPED", "INVOICED")

            await eventually(shipped, timeout=60, what="the order shipped")
            r = await http.post("/v1/returns", headers={**t.auth(), "Idempotency-Key": str(uuid.uuid4())},
                                json={"order_id": order_id, "lines": [
                                    {"sku": t.world.skus[0], "quantity": 1, "reason": "NOT_NEEDED"}]})
            assert r.status_code == 201, r.text
            return Records(order_id, r.json()["return_id"])

    return asyncio.run(make())


@pytest.fixture(scope="package")
def b_records(gateway: Gateway) -> Records:
    """Tenant B's records: what tenant A must never reach."""
    return _shipped_order_with_a_return(gateway, gateway.b)


@pytest.fixture(scope="package")
def a_records(gateway: Gateway) -> Records:
    """Tenant A's own records: a listing of A's must show them (so that it proves something)."""
    return _shipped_order_with_a_return(gateway, gateway.a)
