"""Order-to-ship end to end: every service a separate process, real gRPC,
real nats-server, SQLite stores."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import grpc
import pytest
from google.rpc import error_details_pb2

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import status_details
from tests.e2e.conftest import World, make_world
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


async def submit_all(stubs, reqs: list[pb.SubmitOrderRequest], concurrency: int = 8) -> list[str]:
    sem = asyncio.Semaphore(concurrency)

    async def one(req):
        async with sem:
            for attempt in range(30):  # a channel retries with the same request_id
                try:
                    return (await stubs.ots.SubmitOrder(req, timeout=10)).order.order_id
                except grpc.aio.AioRpcError as err:
                    if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise AssertionError("order-to-ship stayed unavailable")

    return await asyncio.gather(*(one(r) for r in reqs))


async def statuses(stubs, order_ids: list[str]) -> dict[str, pb.Order]:
    out = {}
    for oid in order_ids:
        out[oid] = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=oid), timeout=10)).order
    return out


async def wait_all(stubs, order_ids, status=pb.ORDER_STATUS_INVOICED, timeout=180.0):
    async def done():
        orders = await statuses(stubs, order_ids)
        return orders if all(o.status == status for o in orders.values()) else None
    try:
        return await eventually(done, timeout=timeout, interval=0.5, what="orders to finish")
    except AssertionError:
        orders = await statuses(stubs, order_ids)
        counts = Counter(pb.OrderStatus.Name(o.status) for o in orders.values())
        raise AssertionError(f"not all {pb.OrderStatus.Name(status)}: {dict(counts)}") from None


def random_orders(world: World, n: int, seed: int) -> list[pb.SubmitOrderRequest]:
    rnd = random.Random(seed)
    return [world.order({s: rnd.randint(1, 4)
                         for s in rnd.sample(world.skus, rnd.randint(1, len(world.skus)))})
            for _ in range(n)]


async def check_books(stubs, world: World, orders: dict[str, pb.Order]) -> None:
    """WMS stock and the ERP ledger both fell by exactly the shipped quantities;
    exactly one invoice per shipped order, for the order's total."""
    shipped = Counter()
    for o in orders.values():
        for ln in o.lines:
            shipped[ln.sku] += ln.quantity
    wms = {p.sku: p for p in (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=world.skus, warehouse_id=world.warehouse_id))).positions}
    for sku in world.skus:
        assert wms[sku].on_hand == world.stock - shipped[sku], sku
        assert wms[sku].allocated == 0, sku

    async def ledger_matches():
        ledger = {p.sku: p.on_hand for p in (await stubs.erp.ListLedgerPositions(
            erp_pb2.ListLedgerPositionsRequest(warehouse_id=world.warehouse_id, page_size=500))).positions}
        return all(ledger.get(s) == world.stock - shipped[s] for s in world.skus)
    await eventually(ledger_matches, timeout=30, what="ERP ledger equal to WMS stock")

    for o in orders.values():
        invoices = (await stubs.erp.ListInvoices(erp_pb2.ListInvoicesRequest(order_id=o.order_id))).invoices
        assert len(invoices) == 1, o.order_id
        assert invoices[0].total.amount_minor == o.total.amount_minor
        assert o.invoice_id == invoices[0].invoice_id
    customer = (await stubs.erp.GetCustomer(
        erp_pb2.GetCustomerRequest(customer_id=world.customer_id))).customer
    assert customer.open_balance.amount_minor == sum(o.total.amount_minor for o in orders.values())
    assert customer.open_orders.amount_minor == 0


async def test_fifty_orders_shipped_and_invoiced_once(stubs):
    world = await make_world(stubs)
    order_ids = await submit_all(stubs, random_orders(world, 50, seed=1))
    orders = await wait_all(stubs, order_ids)
    await check_books(stubs, world, orders)
    # The timeline has every step, from every system on the path.
    timeline = orders[order_ids[0]].timeline
    assert {e.source for e in timeline} == {"ordertoship", "erp", "wms", "tms"}
    steps = [e.step for e in timeline]
    for step in ["received", "credit.approved", "released", "allocated", "picked", "packed",
                 "shipment.booked", "shipped", "invoice.posted"]:
        assert step in steps
    assert all(e.trace_id == orders[order_ids[0]].trace_id for e in timeline)


async def test_credit_refusal_rejects_with_reason_and_touches_no_stock(stubs):
    world = await make_world(stubs, credit_minor=1_500)
    (oid,) = await submit_all(stubs, [world.order({world.skus[1]: 1})])  # 20.00 > 15.00
    orders = await wait_all(stubs, [oid], status=pb.ORDER_STATUS_REJECTED)
    assert "CREDIT_LIMIT_EXCEEDED" in orders[oid].status_reason
    assert any(e.step == "credit.refused" and e.source == "erp" for e in orders[oid].timeline)
    pos = (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=[world.skus[1]], warehouse_id=world.warehouse_id))).positions[0]
    assert (pos.on_hand, pos.allocated) == (world.stock, 0)


async def test_shortage_backorders_then_a_receipt_releases_it(stubs):
    world = await make_world(stubs, stock=5, n_skus=1)
    sku = world.skus[0]
    (oid,) = await submit_all(stubs, [world.order({sku: 8}, shortage_policy=pb.SHORTAGE_POLICY_BACKORDER)])
    orders = await wait_all(stubs, [oid], status=pb.ORDER_STATUS_BACKORDERED)
    assert f"{sku} short by 3" in orders[oid].status_reason
    await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
        receipt_id=f"R2-{world.suffix}", warehouse_id=world.warehouse_id,
        lines=[SkuQuantity(sku=sku, quantity=10)]))
    await wait_all(stubs, [oid])
    pos = (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=[sku], warehouse_id=world.warehouse_id))).positions[0]
    assert pos.on_hand == 5 + 10 - 8


async def test_shortage_under_cancel_policy_cancels_and_releases_credit(stubs):
    world = await make_world(stubs, stock=2, n_skus=1)
    (oid,) = await submit_all(stubs, [world.order({world.skus[0]: 3},
                                                  shortage_policy=pb.SHORTAGE_POLICY_CANCEL)])
    orders = await wait_all(stubs, [oid], status=pb.ORDER_STATUS_CANCELLED)
    assert "INSUFFICIENT_STOCK" in orders[oid].status_reason

    async def credit_released():
        so = (await stubs.erp.GetSalesOrder(erp_pb2.GetSalesOrderRequest(order_id=oid))).sales_order
        c = (await stubs.erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id=world.customer_id))).customer
        return so.status == erp_pb2.SALES_ORDER_STATUS_CANCELLED and c.open_orders.amount_minor == 0
    await eventually(credit_released, what="sales order cancelled in ERP")


async def test_cancel_a_backordered_order_compensates(stubs):
    world = await make_world(stubs, stock=0, n_skus=1)
    (oid,) = await submit_all(stubs, [world.order({world.skus[0]: 1})])
    await wait_all(stubs, [oid], status=pb.ORDER_STATUS_BACKORDERED)
    resp = await stubs.ots.CancelOrder(pb.CancelOrderRequest(order_id=oid, reason="customer changed mind"))
    assert resp.order.status == pb.ORDER_STATUS_CANCELLING
    orders = await wait_all(stubs, [oid], status=pb.ORDER_STATUS_CANCELLED)
    steps = [e.step for e in orders[oid].timeline]
    assert "cancel.requested" in steps and "fulfilment.cancelled" in steps
    fo = (await stubs.wms.GetFulfilmentOrder(
        wms_pb2.GetFulfilmentOrderRequest(order_id=oid))).fulfilment_order
    assert fo.status == wms_pb2.FULFILMENT_STATUS_CANCELLED
    # A finished order cannot be cancelled again into another state.
    again = await stubs.ots.CancelOrder(pb.CancelOrderRequest(order_id=oid))
    assert again.order.status == pb.ORDER_STATUS_CANCELLED


async def test_submission_is_idempotent_on_request_id(stubs):
    world = await make_world(stubs)
    req = world.order({world.skus[0]: 2})
    first = (await stubs.ots.SubmitOrder(req)).order
    again = (await stubs.ots.SubmitOrder(req)).order
    assert again.order_id == first.order_id
    other = pb.SubmitOrderRequest()
    other.CopyFrom(req)
    other.lines[0].quantity = 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.ots.SubmitOrder(other)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = (await stubs.ots.ListOrders(pb.ListOrdersRequest(customer_id=world.customer_id))).orders
    assert [o.order_id for o in listed] == [first.order_id]


def violations(err: grpc.aio.AioRpcError) -> set[str]:
    bad = error_details_pb2.BadRequest()
    status = status_details(err)
    assert status is not None, "no google.rpc.Status details"
    return {v.field for d in status.details if d.Unpack(bad) for v in bad.field_violations}


async def test_bad_input_is_refused_with_details_and_writes_nothing(stubs):
    world = await make_world(stubs)

    async def refused(req) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.ots.SubmitOrder(req)
        return info.value

    err = await refused(pb.SubmitOrderRequest(customer_id="C-NOBODY",
                                              lines=[pb.OrderLine(sku=world.skus[0], quantity=1)]))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "C-NOBODY" in err.details()
    err = await refused(world.order({"SKU-NOPE": 1}))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "SKU-NOPE" in err.details()
    err = await refused(world.order({world.skus[0]: 0}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == {"lines[0].quantity"}
    dup = world.order({world.skus[0]: 1})
    dup.lines.append(pb.OrderLine(sku=world.skus[0], quantity=2))
    err = await refused(dup)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == {"lines[1].sku"}
    err = await refused(pb.SubmitOrderRequest(customer_id=world.customer_id, lines=[
        pb.OrderLine(sku="X" * 1000, quantity=1) for _ in range(1500)]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    err = await refused(world.order({world.skus[0]: 1}, warehouse_id="WH-NOPE"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    listed = (await stubs.ots.ListOrders(pb.ListOrdersRequest(customer_id=world.customer_id))).orders
    assert listed == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.ots.GetOrder(pb.GetOrderRequest(order_id="ORD-NOPE"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.ots.ListOrders(pb.ListOrdersRequest(page_token="garbage"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_orders_pages(stubs):
    world = await make_world(stubs)
    ids = await submit_all(stubs, [world.order({world.skus[0]: 1}) for _ in range(5)])
    seen, token = [], ""
    while True:
        resp = await stubs.ots.ListOrders(pb.ListOrdersRequest(customer_id=world.customer_id, page_size=2,
                                                               page_token=token))
        seen += [o.order_id for o in resp.orders]
        token = resp.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
