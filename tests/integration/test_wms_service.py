"""WMS as a real process against a real nats-server and SQLite store: the wiring (the
consumers and their dispatch, the gRPC API and its status details, the relay and the
order's trace, the autopilot across a restart). What the use cases decide is tested
in-process in tests/usecases/test_wms_*.py."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import Address, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from crossdock.wms.v1 import messages_pb2 as wms_msgs
from crossdock.wms.v1 import wms_pb2, wms_pb2_grpc
from services.mesh.errors import status_details
from services.mesh.store import build_headers
from tests.helpers import eventually, publish, unique

WH = "WH-1"
FAST = {"CROSSDOCK_WMS_PICK_DELAY": "0", "CROSSDOCK_WMS_PACK_DELAY": "0",
        "CROSSDOCK_WMS_SHIP_DELAY": "0"}
MANUAL = {"CROSSDOCK_WMS_AUTOPILOT": "false"}
S = wms_pb2.FulfilmentStatus
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def wms(start_service):
    """Factory: ``stub = await wms(**env)`` starts WMS with warehouse WH-1."""
    channels = []

    async def start(**env: str) -> wms_pb2_grpc.WmsServiceStub:
        proc = start_service("wms", **{**FAST, **env})
        channels.append(grpc.aio.insecure_channel(proc.addr))
        stub = wms_pb2_grpc.WmsServiceStub(channels[-1])
        await stub.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(
            warehouse=wms_pb2.Warehouse(warehouse_id=WH, name="Main", address=Address(country_code="US"))))
        return stub

    yield start
    for channel in channels:
        await channel.close()


async def receive(stub, receipt_id: str, **quantities: int) -> wms_pb2.ReceiveStockResponse:
    lines = [SkuQuantity(sku=sku, quantity=q) for sku, q in quantities.items()]
    return await stub.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id=receipt_id, warehouse_id=WH, lines=lines))


def create_command(order_id: str, policy=wms_pb2.SHORTAGE_POLICY_BACKORDER, warehouse_id=WH,
                   **quantities: int) -> wms_msgs.CreateFulfilment:
    return wms_msgs.CreateFulfilment(
        order_id=order_id, warehouse_id=warehouse_id, shortage_policy=policy,
        lines=[SkuQuantity(sku=sku, quantity=q) for sku, q in quantities.items()],
        ship_to=Address(name="Ada", country_code="US"))


async def create(nc, order_id: str, *args, **kwargs) -> None:
    await publish(nc, "cmd.wms.fulfilment.create", create_command(order_id, *args, **kwargs), key=order_id)


async def positions(stub, *skus: str) -> dict[str, tuple[int, int, int]]:
    """sku -> (on_hand, allocated, sequence) in WH-1."""
    resp = await stub.GetAvailability(wms_pb2.GetAvailabilityRequest(skus=skus, warehouse_id=WH))
    for p in resp.positions:
        assert p.available == p.on_hand - p.allocated
    return {p.sku: (p.on_hand, p.allocated, p.sequence) for p in resp.positions}


async def order(stub, order_id: str) -> wms_pb2.FulfilmentOrder:
    resp = await stub.GetFulfilmentOrder(wms_pb2.GetFulfilmentOrderRequest(order_id=order_id))
    return resp.fulfilment_order


async def has_status(stub, order_id: str, status: int) -> bool:
    return (await order(stub, order_id)).status == status


def of_order(log, subject: str, order_id: str) -> list:
    return [m for m in log.of(subject) if m.fulfilment_order.order_id == order_id]


def milestones(fo: wms_pb2.FulfilmentOrder) -> list[int]:
    return [m.status for m in fo.milestones]


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def detail(err: grpc.aio.AioRpcError, kind):
    found = kind()
    assert any(d.Unpack(found) for d in status_details(err).details), f"no {kind.__name__}"
    return found


async def test_fulfilment_runs_from_allocation_to_shipment(wms, nc, events, data_dir):
    stub = await wms()
    log = await events(["wms.>"])
    await publish(nc, "erp.item.upserted",
                  erp_msgs.ItemUpserted(item=erp_pb2.Item(sku="A", weight_grams=200)))

    def replicated():
        with sqlite3.connect(data_dir / "wms.db") as db:
            return db.execute("SELECT weight_grams FROM items WHERE sku='A'").fetchone()

    assert await eventually(replicated, what="item A in the WMS replica") == (200,)
    await receive(stub, "R-1", A=10, B=5)
    order_id = unique("O")
    # The command comes in a trace: every event about the order stays in it.
    cmd = create_command(order_id, A=3, B=2)
    headers = build_headers(cmd, source="test", event_id=unique("E"), key=order_id)
    await nc.jetstream().publish("cmd.wms.fulfilment.create", cmd.SerializeToString(),
                                 headers={**headers, "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    await create(nc, order_id, A=9, B=9)  # a second command for the same order: ignored

    packed = await eventually(lambda: of_order(log, "wms.fulfilment.packed", order_id), what="packed")
    assert packed[0].fulfilment_order.package_weight_grams == 3 * 200 + 2 * 500  # B unknown: 500 g
    allocated = of_order(log, "wms.fulfilment.allocated", order_id)
    assert len(allocated) == 1
    assert milestones(allocated[0].fulfilment_order) == [S.FULFILMENT_STATUS_ALLOCATED]
    assert [(li.sku, li.quantity) for li in allocated[0].fulfilment_order.lines] == [("A", 3), ("B", 2)]
    assert of_order(log, "wms.fulfilment.picked", order_id)
    assert await positions(stub, "A", "B") == {"A": (10, 3, 1), "B": (5, 2, 1)}

    await publish(nc, "cmd.wms.fulfilment.assign_shipment", wms_msgs.AssignShipment(
        order_id=order_id, shipment_id=f"SHP-{order_id}", carrier_id="CHEAP", tracking_number="CHE1"),
        key=order_id)
    shipped = await eventually(lambda: of_order(log, "wms.fulfilment.shipped", order_id), what="shipped")
    fo = shipped[0].fulfilment_order
    assert (fo.status, fo.carrier_id, fo.tracking_number, fo.ship_to.name) == (
        S.FULFILMENT_STATUS_SHIPPED, "CHEAP", "CHE1", "Ada")
    assert milestones(fo) == [S.FULFILMENT_STATUS_ALLOCATED, S.FULFILMENT_STATUS_PICKED,
                              S.FULFILMENT_STATUS_PACKED, S.FULFILMENT_STATUS_LABELLED,
                              S.FULFILMENT_STATUS_SHIPPED]
    assert await positions(stub, "A", "B") == {"A": (7, 0, 2), "B": (3, 0, 2)}
    moves = [m for m in log.of("wms.inventory.adjusted") if m.reason == wms_msgs.MOVEMENT_REASON_SHIPMENT]
    assert {(m.sku, m.delta, m.on_hand_after, m.sequence, m.reference) for m in moves} == {
        ("A", -3, 7, 2, order_id), ("B", -2, 3, 2, order_id)}
    assert (await order(stub, order_id)).status == S.FULFILMENT_STATUS_SHIPPED
    about_order = [h for subject, m, h in log.messages if order_id in (
        m.reference if subject == "wms.inventory.adjusted" else m.fulfilment_order.order_id)]
    assert len(about_order) == 6  # allocated, picked, packed, 2 movements, shipped
    assert {h["traceparent"].split("-")[1] for h in about_order} == {TRACE_ID}


async def test_the_grpc_api_answers_and_refuses_with_status_details(wms, nc, events):
    stub = await wms(**MANUAL)
    log = await events(["wms.fulfilment.>"])
    err = await rpc_error(stub.ReceiveStock(wms_pb2.ReceiveStockRequest(
        warehouse_id=WH, lines=[SkuQuantity(sku="A", quantity=0), SkuQuantity(sku="A", quantity=1)])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in detail(err, error_details_pb2.BadRequest).field_violations} == {
        "receipt_id", "lines[0].quantity", "lines[1].sku"}
    err = await rpc_error(stub.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id="R-X", warehouse_id="NOPE", lines=[SkuQuantity(sku="A", quantity=1)])))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert detail(err, error_details_pb2.ResourceInfo).resource_name == "NOPE"
    err = await rpc_error(stub.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(stub.GetFulfilmentOrder(wms_pb2.GetFulfilmentOrderRequest(order_id="O-?")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(stub.ListInventory(wms_pb2.ListInventoryRequest(page_token="junk")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await stub.ListWarehouses(wms_pb2.ListWarehousesRequest())
    assert [(w.warehouse_id, w.name, w.address.country_code) for w in listed.warehouses] == [
        (WH, "Main", "US")]

    await receive(stub, "R-1", A=5)
    page = await stub.ListInventory(wms_pb2.ListInventoryRequest(page_size=1))
    assert [(p.sku, p.on_hand) for p in page.positions] == [("A", 5)]
    await create(nc, "O-1", A=2)
    await eventually(lambda: of_order(log, "wms.fulfilment.allocated", "O-1"), what="allocated")
    # The handheld tools: each milestone RPC answers the fulfilment as it is now, or why not.
    err = await rpc_error(stub.ConfirmPack(wms_pb2.ConfirmPackRequest(order_id="O-1")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail(err, error_details_pb2.ErrorInfo).reason == "FULFILMENT_NOT_PICKED"
    violation = detail(err, error_details_pb2.PreconditionFailure).violations[0]
    assert (violation.type, violation.subject) == ("FULFILMENT_NOT_PICKED", "fulfilments/O-1")
    err = await rpc_error(stub.ConfirmPick(wms_pb2.ConfirmPickRequest(order_id="O-?")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(stub.ConfirmPick(wms_pb2.ConfirmPickRequest(
        order_id="O-1", picked_lines=[SkuQuantity(sku="Z", quantity=1)])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    picked = await stub.ConfirmPick(wms_pb2.ConfirmPickRequest(order_id="O-1"))
    assert picked.fulfilment_order.status == S.FULFILMENT_STATUS_PICKED
    packed = await stub.ConfirmPack(wms_pb2.ConfirmPackRequest(order_id="O-1", package_weight_grams=1234))
    assert packed.fulfilment_order.package_weight_grams == 1234
    err = await rpc_error(stub.ConfirmShip(wms_pb2.ConfirmShipRequest(order_id="O-1")))
    assert detail(err, error_details_pb2.ErrorInfo).reason == "NO_SHIPMENT_ASSIGNED"
    await publish(nc, "cmd.wms.fulfilment.assign_shipment", wms_msgs.AssignShipment(
        order_id="O-1", shipment_id="SHP-1", carrier_id="FAST", tracking_number="FAS1"))
    await eventually(lambda: has_status(stub, "O-1", S.FULFILMENT_STATUS_LABELLED), what="labelled")
    shipped = await stub.ConfirmShip(wms_pb2.ConfirmShipRequest(order_id="O-1"))
    assert shipped.fulfilment_order.status == S.FULFILMENT_STATUS_SHIPPED
    assert await positions(stub, "A") == {"A": (3, 0, 2)}
    err = await rpc_error(stub.ConfirmShip(wms_pb2.ConfirmShipRequest(order_id="O-1")))
    assert detail(err, error_details_pb2.ErrorInfo).reason == "FULFILMENT_SHIPPED"
    await eventually(lambda: of_order(log, "wms.fulfilment.shipped", "O-1"), what="shipped event")


async def test_a_cancel_that_overtakes_its_create_leaves_the_order_cancelled(wms, nc, events):
    """The command consumer handles a cancel before its create (a redelivery after a failed
    first attempt, say): the late create finds the tombstone and allocates nothing."""
    stub = await wms(**MANUAL)
    log = await events(["wms.fulfilment.>"])
    await receive(stub, "R-1", A=5)
    await publish(nc, "cmd.wms.fulfilment.cancel",
                  wms_msgs.CancelFulfilment(order_id="O-1", reason="customer"), key="O-1")
    await create(nc, "O-1", A=2)
    await create(nc, "O-2", A=1)  # after O-1's create in the same stream: once it is there, so was O-1's
    await eventually(lambda: of_order(log, "wms.fulfilment.allocated", "O-2"), what="O-2 allocated")
    assert (await order(stub, "O-1")).status == S.FULFILMENT_STATUS_CANCELLED
    assert [m.reason for m in of_order(log, "wms.fulfilment.cancelled", "O-1")] == ["customer"]
    assert not of_order(log, "wms.fulfilment.allocated", "O-1")
    assert await positions(stub, "A") == {"A": (5, 1, 1)}


async def test_competing_orders_never_oversell(wms, nc):
    stub = await wms(**MANUAL)
    await receive(stub, "R-1", D=5)
    order_ids = [f"O-{i}" for i in range(6)]
    # Six orders of 2 race a receipt of 3: 8 units serve exactly four of them.
    await asyncio.gather(*(create(nc, o, D=2) for o in order_ids), receive(stub, "R-2", D=3))

    async def decided():
        try:
            return [(await order(stub, o)).status for o in order_ids]
        except grpc.aio.AioRpcError:
            return None

    statuses = await eventually(decided, what="every order decided")
    assert sorted(statuses) == [S.FULFILMENT_STATUS_BACKORDERED] * 2 + [S.FULFILMENT_STATUS_ALLOCATED] * 4
    assert await positions(stub, "D") == {"D": (8, 8, 2)}


async def test_autopilot_resumes_after_a_restart(start_service, nc, events):
    first = start_service("wms", **MANUAL)
    log = await events(["wms.fulfilment.>"])
    async with grpc.aio.insecure_channel(first.addr) as channel:
        stub = wms_pb2_grpc.WmsServiceStub(channel)
        await stub.UpsertWarehouse(
            wms_pb2.UpsertWarehouseRequest(warehouse=wms_pb2.Warehouse(warehouse_id=WH)))
        await receive(stub, "R-1", A=1)
    await create(nc, "O-1", A=1)
    await eventually(lambda: of_order(log, "wms.fulfilment.allocated", "O-1"), what="allocated")
    first.stop()
    start_service("wms", **FAST)
    packed = await eventually(lambda: of_order(log, "wms.fulfilment.packed", "O-1"),
                              what="packed after restart")
    assert (milestones(packed[0].fulfilment_order)[-2:]
            == [S.FULFILMENT_STATUS_PICKED, S.FULFILMENT_STATUS_PACKED])
