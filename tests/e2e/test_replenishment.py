"""Replenishment end to end: every service a separate process, real gRPC, real
nats-server, SQLite stores. Reorder points are set in ERP, WMS asks for stock
once per crossing, ERP plans a purchase or a transfer and its simulated
supplier/carrier delivers it; backorders are released and invoiced."""

from __future__ import annotations

import uuid

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.erp.v1 import erp_pb2, replenishment_pb2_grpc
from crossdock.erp.v1 import replenishment_pb2 as rpb
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh.config import SERVICES
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, World, make_world
from tests.e2e.test_order_to_ship import submit_all, wait_all
from tests.helpers import PG_URL, EventLog, eventually, pg_database, pg_drop

pytestmark = pytest.mark.e2e

LEAD_TIMES = {"CROSSDOCK_ERP_SUPPLIER_LEAD_TIME": "0.5", "CROSSDOCK_ERP_TRANSFER_LEAD_TIME": "0.5",
              "CROSSDOCK_ERP_REPLENISHMENT_INTERVAL": "0.1"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=[
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set (.ci/run sets it)")])])
def mesh(request, tmp_path_factory):
    """The mesh on SQLite, and on PostgreSQL (row locks instead of one writer)."""
    names = {svc: f"crossdock_{svc}_{uuid.uuid4().hex[:8]}" for svc in SERVICES} \
        if request.param == "postgresql" else {}
    urls = {svc: pg_database(PG_URL, name) for svc, name in names.items()} or None
    m = Mesh(tmp_path_factory.mktemp("mesh"), env={**FAST, **LEAD_TIMES}, database_urls=urls)
    try:
        m.start()
        yield m
    finally:
        m.stop()
        for name in names.values():
            pg_drop(PG_URL, name)


@pytest.fixture
def repl(stubs):
    return replenishment_pb2_grpc.ReplenishmentServiceStub(stubs.channels[0])


@pytest.fixture
async def requests_log(nc_mesh):
    return await EventLog().start(nc_mesh, ["wms.replenishment.requested"])


async def set_reorder_point(repl, warehouse_id: str, sku: str, point: int, quantity: int) -> rpb.ReorderPoint:
    return (await repl.UpsertReorderPoint(rpb.UpsertReorderPointRequest(reorder_point=rpb.ReorderPoint(
        sku=sku, warehouse_id=warehouse_id, reorder_point=point, reorder_quantity=quantity)))).reorder_point


async def replenishments(repl, warehouse_id: str) -> list[rpb.Replenishment]:
    return list((await repl.ListReplenishments(rpb.ListReplenishmentsRequest(
        warehouse_id=warehouse_id, page_size=500))).replenishments)


async def all_received(repl, warehouse_id: str, count: int) -> list[rpb.Replenishment]:
    async def check():
        found = await replenishments(repl, warehouse_id)
        return found if len(found) == count and all(
            r.status == rpb.REPLENISHMENT_STATUS_RECEIVED for r in found) else None
    return await eventually(check, timeout=60, what=f"{count} replenishment(s) received in {warehouse_id}")


async def wms_position(stubs, warehouse_id: str, sku: str) -> wms_pb2.InventoryPosition:
    return (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=[sku], warehouse_id=warehouse_id))).positions[0]


async def ledger_equals_wms(stubs, warehouse_ids: list[str]) -> None:
    """The ERP inventory ledger holds exactly what WMS holds, position by position."""
    async def same():
        for wh in warehouse_ids:
            wms = {p.sku: p.on_hand for p in (await stubs.wms.ListInventory(
                wms_pb2.ListInventoryRequest(warehouse_id=wh, page_size=500))).positions}
            erp = {p.sku: p.on_hand for p in (await stubs.erp.ListLedgerPositions(
                erp_pb2.ListLedgerPositionsRequest(warehouse_id=wh, page_size=500))).positions}
            assert wms and erp == wms, (wh, erp, wms)
        return True
    await eventually(same, timeout=30, what="ERP ledger equal to WMS stock")


def requested_for(log: EventLog, world: World) -> list:
    return [m for m in log.of("wms.replenishment.requested") if m.warehouse_id == world.warehouse_id]


async def test_backorder_released_by_a_purchase_and_invoiced(stubs, repl, requests_log):
    world = await make_world(stubs, stock=5, n_skus=1)
    sku = world.skus[0]
    point = await set_reorder_point(repl, world.warehouse_id, sku, point=5, quantity=20)
    assert point.revision == 1
    (oid,) = await submit_all(stubs, [world.order({sku: 8}, shortage_policy=pb.SHORTAGE_POLICY_BACKORDER)])

    # Position 5 - 8 backordered = -3 < 5: one request, order up to 5 + 20.
    (planned,) = await all_received(repl, world.warehouse_id, 1)
    assert planned.kind == rpb.REPLENISHMENT_KIND_PURCHASE and planned.quantity == 28
    assert planned.sku == sku and planned.HasField("expected_receipt_time")
    orders = await wait_all(stubs, [oid])
    steps = [e.step for e in orders[oid].timeline]
    assert "backordered" in " ".join(steps) and steps.index("allocated") > steps.index("released")
    invoices = (await stubs.erp.ListInvoices(erp_pb2.ListInvoicesRequest(order_id=oid))).invoices
    assert len(invoices) == 1
    pos = await wms_position(stubs, world.warehouse_id, sku)
    assert (pos.on_hand, pos.allocated) == (5 + 28 - 8, 0)
    await eventually(lambda: len(requested_for(requests_log, world)) == 1, what="the request event")
    (request,) = requested_for(requests_log, world)
    assert (request.position, request.reorder_point, request.quantity) == (-3, 5, 28)
    assert request.request_id == planned.request_id
    await ledger_equals_wms(stubs, [world.warehouse_id])
    got = (await repl.GetReplenishment(rpb.GetReplenishmentRequest(
        replenishment_id=planned.replenishment_id))).replenishment
    assert got.status == rpb.REPLENISHMENT_STATUS_RECEIVED and got.HasField("receive_time")


async def test_one_request_per_crossing_under_concurrent_orders(stubs, repl, requests_log):
    world = await make_world(stubs, stock=100, n_skus=1)
    sku = world.skus[0]
    await set_reorder_point(repl, world.warehouse_id, sku, point=40, quantity=100)

    # Phase 1: 30 concurrent orders of 3 take the position from 100 to 10:
    # one crossing below 40. The delivery (order up to 140) lifts it above
    # 40 for good, whenever it arrives.
    ids = await submit_all(stubs, [world.order({sku: 3}) for _ in range(30)], concurrency=16)
    await wait_all(stubs, ids)
    (first,) = await all_received(repl, world.warehouse_id, 1)
    # Phase 2: another 30 take it below 40 once more: a second crossing.
    ids += await submit_all(stubs, [world.order({sku: 3}) for _ in range(30)], concurrency=16)
    await wait_all(stubs, ids)
    found = await all_received(repl, world.warehouse_id, 2)
    assert all(r.kind == rpb.REPLENISHMENT_KIND_PURCHASE for r in found)
    assert first.quantity == 140 - first.position

    await eventually(lambda: len(requested_for(requests_log, world)) >= 2, what="the request events")
    requested = requested_for(requests_log, world)
    assert len(requested) == 2, [(r.position, r.quantity) for r in requested]
    assert all(r.position < 40 <= r.position + 3 for r in requested)  # asked at the crossing itself
    pos = await wms_position(stubs, world.warehouse_id, sku)
    assert pos.on_hand == 100 - 180 + sum(r.quantity for r in found) and pos.allocated == 0
    await ledger_equals_wms(stubs, [world.warehouse_id])


async def test_transfer_from_another_warehouse_releases_a_backorder(stubs, repl):
    world = await make_world(stubs, stock=5, n_skus=1)
    sku = world.skus[0]
    donor = f"WH-{world.suffix}-B"
    await stubs.wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(
        warehouse_id=donor, name="donor DC", address=Address(country_code="US"))))
    await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id=f"R-{world.suffix}-B", warehouse_id=donor, lines=[SkuQuantity(sku=sku, quantity=500)]))
    await set_reorder_point(repl, donor, sku, point=100, quantity=100)

    async def ledger_knows_donor():
        positions = (await stubs.erp.ListLedgerPositions(erp_pb2.ListLedgerPositionsRequest(
            warehouse_id=donor))).positions
        return any(p.sku == sku and p.on_hand == 500 for p in positions)
    await eventually(ledger_knows_donor, what="the donor's stock in the ERP ledger")
    await set_reorder_point(repl, world.warehouse_id, sku, point=4, quantity=10)
    (oid,) = await submit_all(stubs, [world.order({sku: 9})])

    # Position 5 - 9 = -4 < 4 (whether the reorder point or the order reaches WMS
    # first): 4 + 10 + 4 = 18 wanted; the donor has 500 - 100 spare.
    (transfer,) = await all_received(repl, world.warehouse_id, 1)
    assert transfer.kind == rpb.REPLENISHMENT_KIND_TRANSFER and transfer.source_warehouse_id == donor
    assert transfer.quantity == 18
    await wait_all(stubs, [oid])
    assert (await wms_position(stubs, donor, sku)).on_hand == 500 - 18
    assert (await wms_position(stubs, world.warehouse_id, sku)).on_hand == 5 + 18 - 9
    await ledger_equals_wms(stubs, [world.warehouse_id, donor])
    # The donor stayed above its own reorder point: it asked for nothing.
    assert await replenishments(repl, donor) == []


async def test_reorder_points_are_master_data(stubs, repl):
    world = await make_world(stubs, stock=50, n_skus=1)
    sku = world.skus[0]
    await set_reorder_point(repl, world.warehouse_id, sku, point=10, quantity=30)
    again = await set_reorder_point(repl, world.warehouse_id, sku, point=60, quantity=30)
    assert again.revision == 2
    listed = (await repl.ListReorderPoints(rpb.ListReorderPointsRequest(
        warehouse_id=world.warehouse_id))).reorder_points
    assert [(p.sku, p.reorder_point, p.revision) for p in listed] == [(sku, 60, 2)]
    # Raising the reorder point above the position is a crossing too (50 < 60):
    # order up to 90.
    (r,) = await all_received(repl, world.warehouse_id, 1)
    assert r.quantity == 40
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await set_reorder_point(repl, world.warehouse_id, "SKU-NOPE", point=1, quantity=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "SKU-NOPE" in info.value.details()
