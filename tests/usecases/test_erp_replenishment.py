"""ERP replenishment, use case by use case: reorder points are master data; a WMS
request becomes one purchase or transfer; a refused transfer becomes a purchase; the
simulated supplier delivers what is due."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import replenishment_pb2 as repl
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from services.erp.builtin.replenishment import deliver_due
from services.mesh.bus import PermanentError
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.store import utcnow
from tests.usecases.erp_support import builtin_erp, movement, usd


@pytest.fixture
async def erp(usecase_store):
    erp = await builtin_erp(usecase_store, erp_supplier_lead_time=5, erp_transfer_lead_time=3)
    await erp.backend.master_data.upsert_item(erp_pb2.Item(sku="SKU-1", uom="EA", unit_price=usd(100)))
    return erp


def point(warehouse_id: str, rp: int, qty: int) -> repl.ReorderPoint:
    return repl.ReorderPoint(sku="SKU-1", warehouse_id=warehouse_id, reorder_point=rp, reorder_quantity=qty)


def request(request_id: str, quantity: int) -> wms_repl.ReplenishmentRequested:
    return wms_repl.ReplenishmentRequested(request_id=request_id, sku="SKU-1", warehouse_id="WH-1",
                                           position=-3, reorder_point=5, reorder_quantity=20,
                                           quantity=quantity)


async def test_reorder_points_are_master_data_with_a_revision(erp, outbox):
    r = erp.backend.replenishment
    assert (await r.upsert_reorder_point(point("WH-2", 10, 5))).revision == 1
    assert (await r.upsert_reorder_point(point("WH-2", 12, 5))).revision == 2
    events = [p.body.reorder_point for p in await outbox(erp.store, "erp.reorderpoint.upserted")]
    assert [(e.reorder_point, e.revision) for e in events] == [(10, 1), (12, 2)]
    listed, _ = await r.list_reorder_points(10, "", "WH-2")
    assert [(p.sku, p.reorder_point) for p in listed] == [("SKU-1", 12)]
    with pytest.raises(InvalidArgument):
        await r.upsert_reorder_point(point("WH-2", -1, 0))
    with pytest.raises(NotFound):
        await r.upsert_reorder_point(repl.ReorderPoint(sku="NOPE", warehouse_id="WH-2", reorder_quantity=1))


async def test_a_request_is_a_transfer_from_spare_stock_once_then_a_purchase_when_refused(erp, outbox):
    r = erp.backend.replenishment
    await r.upsert_reorder_point(point("WH-2", 10, 5))
    await erp.move(movement("SKU-1", "WH-2", 1, 100, 100))  # WH-2: 100 on hand, 90 spare
    await erp.send(r.plan, request("REQ-1", 28))
    await erp.send(r.plan, request("REQ-1", 28))  # redelivered as a new message: one plan
    (transfer,) = [p.body for p in await outbox(erp.store, "cmd.wms.stock.transfer_out")]
    assert (transfer.warehouse_id, transfer.destination_warehouse_id) == ("WH-2", "WH-1")
    assert [(x.sku, x.quantity) for x in transfer.lines] == [("SKU-1", 28)]
    (planned,), _ = await r.list(10, "", "", "SKU-1")
    assert planned.kind == repl.REPLENISHMENT_KIND_TRANSFER and "90 spare" in planned.note

    await erp.send(r.transfer_refused, wms_repl.StockTransferRefused(
        transfer_id=transfer.transfer_id, warehouse_id="WH-2", destination_warehouse_id="WH-1",
        lines=transfer.lines, reason_code="INSUFFICIENT_STOCK", reason="short"))
    kinds = [p.body.replenishment.kind for p in await outbox(erp.store, "erp.replenishment.planned")]
    assert kinds == [repl.REPLENISHMENT_KIND_TRANSFER, repl.REPLENISHMENT_KIND_PURCHASE]
    got = await r.get(planned.replenishment_id)
    assert got.kind == repl.REPLENISHMENT_KIND_PURCHASE and "refused" in got.note


async def test_a_request_no_warehouse_covers_is_purchased_and_delivered_when_due(erp, outbox):
    r = erp.backend.replenishment
    await erp.send(r.plan, request("REQ-2", 7))
    (planned,), _ = await r.list(10, "", "WH-1", "")
    assert planned.kind == repl.REPLENISHMENT_KIND_PURCHASE
    async with erp.store.transaction() as tx:
        assert await deliver_due(tx, now=utcnow()) == []  # not due yet (5 s lead time)
    async with erp.store.transaction() as tx:
        assert await deliver_due(tx, now=utcnow() + timedelta(seconds=6)) == [planned.replenishment_id]
    (delivery,) = [p.body for p in await outbox(erp.store, "cmd.wms.stock.receive")]
    assert (delivery.receipt_id, delivery.warehouse_id, delivery.request_id) == (
        planned.replenishment_id, "WH-1", "REQ-2")
    assert (await r.get(planned.replenishment_id)).status == repl.REPLENISHMENT_STATUS_DELIVERED
    await erp.send(r.received, wms_repl.StockReceived(receipt_id=delivery.receipt_id, warehouse_id="WH-1",
                                                      lines=delivery.lines, request_id="REQ-2"))
    assert (await r.get(planned.replenishment_id)).status == repl.REPLENISHMENT_STATUS_RECEIVED


async def test_a_transfer_issued_is_in_transit_until_its_lead_time(erp, outbox):
    r = erp.backend.replenishment
    await erp.move(movement("SKU-1", "WH-2", 1, 50, 50))
    await erp.send(r.plan, request("REQ-3", 10))
    (transfer,) = [p.body for p in await outbox(erp.store, "cmd.wms.stock.transfer_out")]
    await erp.send(r.transfer_issued, wms_repl.StockTransferredOut(
        transfer_id=transfer.transfer_id, warehouse_id="WH-2", destination_warehouse_id="WH-1",
        lines=transfer.lines))
    assert (await r.get(transfer.transfer_id)).status == repl.REPLENISHMENT_STATUS_IN_TRANSIT
    async with erp.store.transaction() as tx:
        assert await deliver_due(tx, now=utcnow() + timedelta(seconds=4)) == [transfer.transfer_id]


async def test_an_incomplete_request_is_a_permanent_error(erp):
    with pytest.raises(PermanentError):
        await erp.send(erp.backend.replenishment.plan, wms_repl.ReplenishmentRequested(request_id="R"))
