"""Replenishment in WMS and in ERP, each a real process against a real
nats-server and SQLite store: the trigger and the stock commands in WMS, the
planning (idempotent, purchase vs transfer, refused transfer -> purchase) and
the delivery loop in ERP."""

from __future__ import annotations

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2, erp_pb2_grpc, replenishment_pb2_grpc
from crossdock.erp.v1 import replenishment_pb2 as erp_repl
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from crossdock.wms.v1 import replenishment_pb2 as wms_repl
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from tests.helpers import eventually, publish, unique

WH = "WH-1"


@pytest.fixture
async def wms(start_service):
    proc = start_service("wms", CROSSDOCK_WMS_AUTOPILOT="false")
    channel = grpc.aio.insecure_channel(proc.addr)
    stub = wms_pb2_grpc.WmsServiceStub(channel)
    await stub.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(
        warehouse=wms_pb2.Warehouse(warehouse_id=WH, name="Main", address=Address(country_code="US"))))
    yield stub
    await channel.close()


async def on_hand(stub, sku: str, warehouse_id: str = WH) -> int:
    resp = await stub.GetAvailability(wms_pb2.GetAvailabilityRequest(skus=[sku], warehouse_id=warehouse_id))
    return resp.positions[0].on_hand if resp.positions else 0


def reorder_point(sku: str, point: int, quantity: int, revision: int) -> erp_repl.ReorderPointUpserted:
    return erp_repl.ReorderPointUpserted(reorder_point=erp_repl.ReorderPoint(
        sku=sku, warehouse_id=WH, reorder_point=point, reorder_quantity=quantity, revision=revision))


async def test_wms_consumers_reach_the_trigger_and_the_stock_commands(wms, nc, events):
    """The reorder-point consumer moves the trigger, the command consumer books receipts and
    transfers (the rules: tests/usecases/test_wms_replenishment.py)."""
    log = await events(["wms.replenishment.requested", "wms.stock.>", "wms.inventory.adjusted"])
    sku = unique("SKU")
    await wms.ReceiveStock(wms_pb2.ReceiveStockRequest(receipt_id=unique("R"), warehouse_id=WH,
                                                       lines=[SkuQuantity(sku=sku, quantity=3)]))
    await publish(nc, "erp.reorderpoint.upserted", reorder_point(sku, 5, 10, revision=1))
    (request,) = await eventually(lambda: [m for m in log.of("wms.replenishment.requested") if m.sku == sku],
                                  what="the request")
    assert (request.position, request.quantity) == (3, 12)

    receive = wms_repl.ReceiveStock(receipt_id=unique("RPL"), warehouse_id=WH, request_id=request.request_id,
                                    lines=[SkuQuantity(sku=sku, quantity=request.quantity)])
    await publish(nc, "cmd.wms.stock.receive", receive)
    (received,) = await eventually(lambda: log.of("wms.stock.received"), what="the receipt")
    assert (received.receipt_id, received.request_id) == (receive.receipt_id, request.request_id)
    assert await on_hand(wms, sku) == 15

    out = wms_repl.TransferStockOut(transfer_id=unique("T"), warehouse_id=WH, destination_warehouse_id="WH-2",
                                    lines=[SkuQuantity(sku=sku, quantity=6)])
    await publish(nc, "cmd.wms.stock.transfer_out", out)
    (issued,) = await eventually(lambda: log.of("wms.stock.transferred_out"), what="the transfer out")
    assert issued.transfer_id == out.transfer_id
    moves = [m for m in log.of("wms.inventory.adjusted") if m.reason == wms_msgs.MOVEMENT_REASON_TRANSFER]
    assert [(m.sku, m.delta, m.on_hand_after, m.reference) for m in moves] == [(sku, -6, 9, out.transfer_id)]


@pytest.fixture
async def erp(start_service):
    proc = start_service("erp", CROSSDOCK_ERP_SUPPLIER_LEAD_TIME="0.3",
                         CROSSDOCK_ERP_TRANSFER_LEAD_TIME="0.3",
                         CROSSDOCK_ERP_REPLENISHMENT_INTERVAL="0.1")
    channel = grpc.aio.insecure_channel(proc.addr)
    yield erp_pb2_grpc.ErpServiceStub(channel), replenishment_pb2_grpc.ReplenishmentServiceStub(channel)
    await channel.close()


async def test_erp_plans_over_jetstream_and_its_delivery_loop_delivers_when_due(erp, nc, events):
    """The process around the planning rules (tests/usecases/test_erp_replenishment.py):
    requests arrive over JetStream, the delivery loop runs by itself."""
    erp_stub, repl = erp
    log = await events(["erp.replenishment.planned", "cmd.wms.stock.>"])
    sku = unique("SKU")
    await erp_stub.UpsertItem(erp_pb2.UpsertItemRequest(item=erp_pb2.Item(
        sku=sku, uom="EA", unit_price=Money(currency_code="USD", amount_minor=100))))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await repl.UpsertReorderPoint(erp_repl.UpsertReorderPointRequest(reorder_point=erp_repl.ReorderPoint(
            sku=sku, warehouse_id="WH-2", reorder_point=-1, reorder_quantity=0)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = wms_repl.ReplenishmentRequested(request_id=unique("REQ"), sku=sku, warehouse_id=WH, position=-3,
                                              reorder_point=5, reorder_quantity=20, quantity=28)
    await publish(nc, "wms.replenishment.requested", request)
    await publish(nc, "wms.replenishment.requested", request)  # redelivered as a new message: one plan
    (delivery,) = await eventually(lambda: log.of("cmd.wms.stock.receive"), what="the delivery")
    (planned,) = log.of("erp.replenishment.planned")
    assert planned.replenishment.kind == erp_repl.REPLENISHMENT_KIND_PURCHASE
    assert (delivery.receipt_id, delivery.warehouse_id, delivery.request_id) == (
        planned.replenishment.replenishment_id, WH, request.request_id)
    await publish(nc, "wms.stock.received", wms_repl.StockReceived(
        receipt_id=delivery.receipt_id, warehouse_id=WH, lines=delivery.lines, request_id=request.request_id))

    async def received():
        r = (await repl.GetReplenishment(erp_repl.GetReplenishmentRequest(
            replenishment_id=delivery.receipt_id))).replenishment
        return r.status == erp_repl.REPLENISHMENT_STATUS_RECEIVED
    await eventually(received, what="RECEIVED")
    listed = await repl.ListReplenishments(erp_repl.ListReplenishmentsRequest(sku=sku))
    assert len(listed.replenishments) == 1
