"""An end-to-end mesh: nats-server and every service as separate processes.

One mesh per module (starting it takes seconds); every test creates its own
uuid-suffixed customer, items and warehouse, so tests do not see each other's
stock or credit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.tms.v1 import tms_pb2, tms_pb2_grpc
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh.launcher import Mesh

FAST = {
    "CROSSDOCK_WMS_PICK_DELAY": "0.05",
    "CROSSDOCK_WMS_PACK_DELAY": "0.05",
    "CROSSDOCK_WMS_SHIP_DELAY": "0.05",
    "CROSSDOCK_ACK_WAIT": "5",
    "CROSSDOCK_OUTBOX_POLL_INTERVAL": "0.2",
}


def start_mesh(tmp_path_factory, database_urls=None) -> Mesh:
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), env=FAST, database_urls=database_urls)
    try:
        mesh.start()
    except BaseException:
        mesh.stop()
        raise
    return mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_mesh(tmp_path_factory)
    yield m
    m.stop()


class Stubs:
    """Stubs of the internal services; ``credentials``: over (mutual) TLS instead of plaintext."""

    def __init__(self, mesh: Mesh, credentials: grpc.ChannelCredentials | None = None) -> None:
        def channel(name: str) -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(mesh.addr(name))
            return grpc.aio.secure_channel(mesh.addr(name), credentials)

        self.channels = [channel(n) for n in ("erp", "wms", "tms", "ordertoship")]
        self.erp = erp_pb2_grpc.ErpServiceStub(self.channels[0])
        self.wms = wms_pb2_grpc.WmsServiceStub(self.channels[1])
        self.tms = tms_pb2_grpc.TmsServiceStub(self.channels[2])
        self.ots = order_to_ship_pb2_grpc.OrderToShipServiceStub(self.channels[3])

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


@pytest.fixture
async def stubs(mesh):
    s = Stubs(mesh)
    yield s
    await s.close()


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


@dataclass
class World:
    """One test's own customer, items and warehouse."""

    suffix: str
    customer_id: str
    warehouse_id: str
    skus: list[str]
    prices: dict[str, int]
    stock: int

    def order(self, lines: dict[str, int], **kw) -> pb.SubmitOrderRequest:
        return pb.SubmitOrderRequest(
            request_id=str(uuid.uuid4()), customer_id=self.customer_id,
            lines=[pb.OrderLine(sku=s, quantity=q) for s, q in lines.items()],
            **{"warehouse_id": self.warehouse_id, **kw})


async def make_world(stubs: Stubs, *, credit_minor: int = 10_000_000_00, stock: int = 1_000,
                     n_skus: int = 3) -> World:
    sfx = uuid.uuid4().hex[:8].upper()
    w = World(sfx, f"C-{sfx}", f"WH-{sfx}", [f"SKU-{sfx}-{i}" for i in range(n_skus)],
              {f"SKU-{sfx}-{i}": 1_000 * (i + 1) for i in range(n_skus)}, stock)
    await stubs.wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(
        warehouse_id=w.warehouse_id, name="test DC", address=Address(country_code="US"))))
    await stubs.erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=erp_pb2.Customer(
        customer_id=w.customer_id, name="Test customer", currency_code="USD",
        credit_limit=usd(credit_minor), ship_to=Address(name="T", line1="1 A St", city="X",
                                                         postal_code="1", country_code="US"))))
    for sku, price in w.prices.items():
        await stubs.erp.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
            sku=sku, description=sku, uom="EA", unit_price=usd(price), weight_grams=700, active=True)))
    await stubs.tms.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=tms_pb2.Carrier(
        carrier_id="E2E-CARRIER", name="Test carrier", active=True, rates=[tms_pb2.Rate(
            service_level="GROUND", country_codes=["US"], base=usd(500), per_kg=usd(50), transit_days=2)])))
    if stock:
        await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
            receipt_id=f"R-{sfx}", warehouse_id=w.warehouse_id,
            lines=[SkuQuantity(sku=s, quantity=stock) for s in w.skus]))
    return w


@pytest.fixture
async def nc_mesh(mesh):
    import nats

    conn = await nats.connect(mesh.nats.url)
    yield conn
    await conn.close()


# ---- the ERP backend (CROSSDOCK_ERP_BACKEND): the same mesh on Tryton ----

def tryton_mesh_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a mesh whose ERP is the Tryton adapter, its trytond started
    by the launcher from the prepared template (no module activation per test)."""
    from tests.tryton_support import tryton_template

    return {**FAST, "CROSSDOCK_ERP_BACKEND": "tryton",
            "CROSSDOCK_ERP_TRYTON_TEMPLATE": "" if (env or {}).get("CROSSDOCK_ERP_TRYTON_PG_TEMPLATE")
            else str(tryton_template()),
            "CROSSDOCK_ERP_TRYTON_FEED_INTERVAL": "0.2", **(env or {})}


def start_tryton_mesh(tmp_path_factory, env: dict[str, str] | None = None, database_urls=None) -> Mesh:
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), env=tryton_mesh_env(env), database_urls=database_urls)
    try:
        mesh.start()
    except BaseException:
        mesh.stop()
        raise
    return mesh


async def tryton_books(mesh: Mesh):
    """Tryton's own records (JSON-RPC, as the integration user), to check the contract's figures."""
    from services.erp.tryton.rpc import Tryton

    return Tryton(mesh.tryton.url, mesh.tryton.database, "crossdock", "crossdock-erp")
