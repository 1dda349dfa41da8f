"""Mutual TLS inside the mesh (Mesh(tls=True), CROSSDOCK_TLS_DIR): every internal
service's port serves only clients with a certificate of the mesh CA; the services
(and the gateway as their client) reach each other with their own certificates;
the gateway's public port stays plaintext (API keys). Real processes throughout."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossdock.admin.v1 import api_clients_pb2 as cpb
from crossdock.admin.v1 import api_clients_pb2_grpc
from crossdock.common.v1.common_pb2 import Address
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from gateway.governance import SCOPES
from services.mesh import operator_token, tls
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, make_world, usd
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

INTERNAL = ("erp", "wms", "tms", "ordertoship", "returns")


@pytest.fixture(scope="module")
def tls_mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), env=FAST, tls=True)
    try:
        mesh.start()
    except BaseException:
        mesh.stop()
        raise
    yield mesh
    mesh.stop()


def tls_dir(mesh: Mesh) -> Path:
    return mesh.data_dir / "tls"


def mesh_credentials(mesh: Mesh) -> grpc.ChannelCredentials:
    return tls.channel_credentials(tls_dir(mesh), tls.OPERATOR)


async def check(channel: grpc.aio.Channel) -> int:
    r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return r.status


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(channel)
    return err.value.code()


def test_certificates_made_once_keys_private(tls_mesh):
    folder = tls_dir(tls_mesh)
    for name in (*INTERNAL, "gateway", "cli"):
        assert (folder / f"{name}.key").stat().st_mode & 0o077 == 0, name
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    tls.ensure(folder)  # again: nothing re-issued
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


async def test_every_internal_port_requires_a_mesh_client_certificate(tls_mesh, tmp_path):
    folder = tls_dir(tls_mesh)
    ca = (folder / "ca.pem").read_bytes()
    # Another CA's certificate with the same name: trusted by nobody in the mesh.
    tls.ensure(tmp_path / "other", names=("cli",))
    other_key, other_cert = ((tmp_path / "other" / n).read_bytes() for n in ("cli.key", "cli.pem"))
    for name in INTERNAL:
        addr = tls_mesh.addr(name)
        assert await refused(grpc.aio.insecure_channel(addr)) == grpc.StatusCode.UNAVAILABLE, name
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        assert await refused(grpc.aio.secure_channel(addr, no_cert)) == grpc.StatusCode.UNAVAILABLE, name
        foreign = grpc.ssl_channel_credentials(root_certificates=ca, private_key=other_key,
                                               certificate_chain=other_cert)
        assert await refused(grpc.aio.secure_channel(addr, foreign)) == grpc.StatusCode.UNAVAILABLE, name
        async with grpc.aio.secure_channel(addr, mesh_credentials(tls_mesh)) as ch:
            assert await check(ch) == health_pb2.HealthCheckResponse.SERVING, name

    # Never served: a write sent in plaintext did not happen.
    customer = f"C-PLAIN-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(tls_mesh.addr("erp")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await erp_pb2_grpc.ErpServiceStub(ch).UpsertCustomer(erp_pb2.UpsertCustomerRequest(
                customer=erp_pb2.Customer(customer_id=customer, name="x", currency_code="USD",
                                          credit_limit=usd(100), ship_to=Address(country_code="US"))),
                timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.secure_channel(tls_mesh.addr("erp"), mesh_credentials(tls_mesh)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await erp_pb2_grpc.ErpServiceStub(ch).GetCustomer(
                erp_pb2.GetCustomerRequest(customer_id=customer), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_order_is_invoiced_through_the_gateway(tls_mesh):
    stubs = Stubs(tls_mesh, mesh_credentials(tls_mesh))  # the operator's certificate
    try:
        world = await make_world(stubs)
    finally:
        await stubs.close()
    # The gateway's public gRPC port: plaintext, API keys (the operator token here).
    operator = operator_token.ensure(tls_mesh.data_dir)
    async with grpc.aio.insecure_channel(tls_mesh.addr("gateway")) as ch:
        assert await check(ch) == health_pb2.HealthCheckResponse.SERVING
        key = (await api_clients_pb2_grpc.ApiClientServiceStub(ch).CreateApiClient(
            cpb.CreateApiClientRequest(name="mtls", channel="ecommerce", customer_id=world.customer_id,
                                       scopes=[s for s in SCOPES if s != "admin"]),
            metadata=(("authorization", f"Bearer {operator}"),), timeout=10)).token
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=tls_mesh.http_url(), timeout=30) as http:
        r = await http.post("/v1/orders", headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                            json={"lines": [{"sku": world.skus[0], "quantity": 2}],
                                  "warehouse_id": world.warehouse_id})
        assert r.status_code == 201, r.text
        order_id = r.json()["order_id"]

        async def invoiced():
            o = (await http.get(f"/v1/orders/{order_id}", headers=auth)).json()
            assert o["status"] not in ("REJECTED", "CANCELLED"), o
            return o["status"] == "INVOICED"

        await eventually(invoiced, timeout=30, interval=0.2, what="the order invoiced")
