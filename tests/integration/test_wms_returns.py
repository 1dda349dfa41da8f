"""WMS as a real process: returns through the command consumer and the handheld gRPC
API (status codes), the returns autopilot, stock as of a movement sequence over gRPC.
What the return use cases decide is tested in-process in tests/usecases/test_wms_returns.py."""

from __future__ import annotations

import grpc
import pytest

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from tests.helpers import eventually, publish, unique

WH = "WH-R"
S = wms_pb2.ReturnReceiptStatus


@pytest.fixture
async def wms(start_service):
    channels = []

    async def start(**env: str) -> wms_pb2_grpc.WmsServiceStub:
        proc = start_service("wms", **{"CROSSDOCK_WMS_RETURN_AUTOPILOT": "false", **env})
        channels.append(grpc.aio.insecure_channel(proc.addr))
        stub = wms_pb2_grpc.WmsServiceStub(channels[-1])
        await stub.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(
            warehouse=wms_pb2.Warehouse(warehouse_id=WH, name="Returns", address=Address(country_code="US"))))
        await stub.ReceiveStock(wms_pb2.ReceiveStockRequest(receipt_id=unique("R"), warehouse_id=WH, lines=[
            SkuQuantity(sku="SKU-A", quantity=10), SkuQuantity(sku="SKU-B", quantity=5)]))
        return stub

    yield start
    for channel in channels:
        await channel.close()


def expect(rma: str, warehouse_id: str = WH, **lines: tuple[int, str]) -> wms_msgs.ExpectReturn:
    """lines: sku=(quantity, reason)"""
    return wms_msgs.ExpectReturn(rma_number=rma, return_id=f"RET-{rma}", order_id="O1",
                                 warehouse_id=warehouse_id, lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, sku=sku, expected_quantity=q, reason_code=r)
        for n, (sku, (q, r)) in enumerate(lines.items(), 1)])


def of(log, subject: str, rma: str) -> list:
    return [m for m in log.of(subject) if m.return_receipt.rma_number == rma]


async def position(stub, sku: str) -> wms_pb2.InventoryPosition:
    return (await stub.GetAvailability(
        wms_pb2.GetAvailabilityRequest(skus=[sku], warehouse_id=WH))).positions[0]


async def test_handheld_receive_and_inspect_restock_only_what_passes(wms, nc, events):
    stub = await wms()
    log = await events(["wms.return.>", "wms.inventory.adjusted"])
    rma = unique("RMA")
    await publish(nc, "cmd.wms.return.expect",
                  expect(rma, **{"SKU-A": (3, "DEFECTIVE"), "SKU-B": (2, "OTHER")}))
    (expected,) = await eventually(lambda: of(log, "wms.return.expected", rma), what="expected")
    assert expected.return_receipt.status == S.RETURN_RECEIPT_STATUS_EXPECTED
    before = await position(stub, "SKU-A")

    # Only 2 of the 3 SKU-A came back; more than expected is refused.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReceiveReturn(wms_pb2.ReceiveReturnRequest(rma_number=rma, lines=[
            wms_pb2.ReturnReceiptLine(line_number=1, received_quantity=4)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    received = (await stub.ReceiveReturn(wms_pb2.ReceiveReturnRequest(rma_number=rma, lines=[
        wms_pb2.ReturnReceiptLine(line_number=1, received_quantity=2),
        wms_pb2.ReturnReceiptLine(line_number=2, received_quantity=2)]))).return_receipt
    assert received.status == S.RETURN_RECEIPT_STATUS_RECEIVED
    assert (await position(stub, "SKU-A")).on_hand == before.on_hand  # quarantine, not stock

    with pytest.raises(grpc.aio.AioRpcError) as info:  # the quantities must add up
        await stub.InspectReturn(wms_pb2.InspectReturnRequest(rma_number=rma, lines=[
            wms_pb2.ReturnReceiptLine(line_number=1, restocked_quantity=2, scrapped_quantity=1)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    inspected = (await stub.InspectReturn(wms_pb2.InspectReturnRequest(rma_number=rma, lines=[
        wms_pb2.ReturnReceiptLine(line_number=1, restocked_quantity=1, scrapped_quantity=1),
        wms_pb2.ReturnReceiptLine(line_number=2, refused_quantity=2, note="used")]))).return_receipt
    assert [(x.restocked_quantity, x.scrapped_quantity, x.refused_quantity, x.note)
            for x in inspected.lines] == [(1, 1, 0, ""), (0, 0, 2, "used")]
    with pytest.raises(grpc.aio.AioRpcError) as info:  # once
        await stub.InspectReturn(wms_pb2.InspectReturnRequest(rma_number=rma, lines=[
            wms_pb2.ReturnReceiptLine(line_number=1, restocked_quantity=2)]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    after = await position(stub, "SKU-A")
    assert (after.on_hand, after.sequence) == (before.on_hand + 1, before.sequence + 1)
    (move,) = await eventually(lambda: [m for m in log.of("wms.inventory.adjusted")
                                        if m.reason == wms_msgs.MOVEMENT_REASON_RETURN], what="movement")
    assert (move.sku, move.delta, move.on_hand_after, move.sequence, move.reference) == (
        "SKU-A", 1, after.on_hand, after.sequence, rma)
    await eventually(lambda: of(log, "wms.return.inspected", rma), what="inspected event")

    # As of the sequence before the return, WMS still knows what it had.
    (as_of,) = (await stub.GetInventoryAsOf(wms_pb2.GetInventoryAsOfRequest(positions=[
        wms_pb2.StockPositionRef(sku="SKU-A", warehouse_id=WH, sequence=before.sequence)]))).positions
    assert (as_of.exists, as_of.known, as_of.on_hand_at_sequence) == (True, True, before.on_hand)
    assert (as_of.current_sequence, as_of.current_on_hand) == (after.sequence, after.on_hand)
    assert as_of.HasField("next_movement_time") and not as_of.next_movement_unpublished

    # A cancel command reaches its use case too: too late for this one.
    await publish(nc, "cmd.wms.return.cancel", wms_msgs.CancelReturn(rma_number=rma))
    (refused,) = await eventually(lambda: of(log, "wms.return.cancel_refused", rma), what="refused")
    assert "already inspected" in refused.reason
    receipt = (await stub.GetReturnReceipt(wms_pb2.GetReturnReceiptRequest(rma_number=rma))).return_receipt
    assert receipt.status == S.RETURN_RECEIPT_STATUS_INSPECTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetReturnReceipt(wms_pb2.GetReturnReceiptRequest(rma_number=unique("RMA")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_returns_autopilot_receives_and_inspects_by_its_rules(wms, nc, events):
    stub = await wms(CROSSDOCK_WMS_RETURN_AUTOPILOT="true", CROSSDOCK_WMS_RETURN_RECEIVE_DELAY="0",
                     CROSSDOCK_WMS_RETURN_INSPECT_DELAY="0",
                     CROSSDOCK_WMS_RETURN_RULES="NOT_NEEDED=RESTOCK,DAMAGED=SCRAP,*=REFUSE")
    log = await events(["wms.return.>"])
    rma = unique("RMA")
    before = await position(stub, "SKU-A")
    await publish(nc, "cmd.wms.return.expect", expect(
        rma, **{"SKU-A": (2, "NOT_NEEDED"), "SKU-B": (1, "DAMAGED"), "SKU-C": (1, "WRONG_ITEM")}))
    (done,) = await eventually(lambda: of(log, "wms.return.inspected", rma), what="autopilot inspection")
    assert [(x.sku, x.received_quantity, x.restocked_quantity, x.scrapped_quantity, x.refused_quantity)
            for x in done.return_receipt.lines] == [("SKU-A", 2, 2, 0, 0), ("SKU-B", 1, 0, 1, 0),
                                                    ("SKU-C", 1, 0, 0, 1)]
    assert [s for s, _, _ in log.messages] == ["wms.return.expected", "wms.return.received",
                                               "wms.return.inspected"]
    assert (await position(stub, "SKU-A")).on_hand == before.on_hand + 2
