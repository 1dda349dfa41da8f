"""Return-to-credit end to end: every service a separate process, real gRPC, real
nats-server, SQLite stores. The WMS returns autopilot is off: the tests receive and
inspect like a handheld at the dock."""

from __future__ import annotations

import asyncio

import grpc
import nats
import pytest
from google.protobuf.duration_pb2 import Duration

from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp_msgs
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.returns.v1 import returns_pb2 as rpb
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import World, make_world
from tests.e2e.returns_support import (
    ReturnsStubs,
    invoiced_order,
    return_request,
    sqlite,
    start_mesh_with,
    wait_return,
)
from tests.helpers import eventually, publish

pytestmark = pytest.mark.e2e

NOT_NEEDED, DEFECTIVE, OTHER = (rpb.RETURN_REASON_NOT_NEEDED, rpb.RETURN_REASON_DEFECTIVE,
                                 rpb.RETURN_REASON_OTHER)
RS = rpb.ReturnStatus


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_mesh_with(tmp_path_factory, {"CROSSDOCK_WMS_RETURN_AUTOPILOT": "false",
                                           "CROSSDOCK_RETURNS_TIMER_INTERVAL": "0.2"})
    yield m
    m.stop()


@pytest.fixture
async def rs(mesh):
    s = ReturnsStubs(mesh)
    yield s
    await s.close()


async def at_dock(rs: ReturnsStubs, stubs, r: rpb.CustomerReturn, received: dict[int, int] | None = None):
    """Wait until the warehouse expects it, then receive it (as expected, or these quantities)."""
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_EXPECTED)
    await stubs.wms.ReceiveReturn(wms_pb2.ReceiveReturnRequest(rma_number=r.rma_number, lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, received_quantity=q) for n, q in (received or {}).items()]))
    return await wait_return(rs, r.return_id, RS.RETURN_STATUS_RECEIVED)


async def inspect(stubs, r: rpb.CustomerReturn, *lines: tuple[int, int, int, int]) -> None:
    """lines: (line number, restock, scrap, refuse)"""
    await stubs.wms.InspectReturn(wms_pb2.InspectReturnRequest(rma_number=r.rma_number, lines=[
        wms_pb2.ReturnReceiptLine(line_number=n, restocked_quantity=a, scrapped_quantity=b,
                                  refused_quantity=c)
        for n, a, b, c in lines]))


async def balance(stubs, world: World) -> int:
    return (await stubs.erp.GetCustomer(erp_pb2.GetCustomerRequest(
        customer_id=world.customer_id))).customer.open_balance.amount_minor


async def on_hand(stubs, world: World, sku: str) -> int:
    return (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
        skus=[sku], warehouse_id=world.warehouse_id))).positions[0].on_hand


async def ledger_follows(stubs, world: World) -> None:
    async def equal():
        wms = {p.sku: p.on_hand for p in (await stubs.wms.GetAvailability(wms_pb2.GetAvailabilityRequest(
            skus=world.skus, warehouse_id=world.warehouse_id))).positions}
        erp = {p.sku: p.on_hand for p in (await stubs.erp.ListLedgerPositions(
            erp_pb2.ListLedgerPositionsRequest(warehouse_id=world.warehouse_id))).positions}
        assert set(world.skus) <= set(wms), f"WMS has no position for {set(world.skus) - set(wms)}"
        return wms == erp
    await eventually(equal, what="ERP ledger equal to WMS stock")


async def rma(stubs, number: str) -> erp_pb2.ReturnAuthorization:
    return (await stubs.erp.GetReturnAuthorization(erp_pb2.GetReturnAuthorizationRequest(
        rma_number=number))).return_authorization


def steps(r: rpb.CustomerReturn) -> list[str]:
    return [e.step for e in r.timeline]


async def test_full_return_to_credit(stubs, rs, mesh):
    world = await make_world(stubs)
    a, b = world.skus[0], world.skus[1]
    order = await invoiced_order(stubs, world, {a: 3, b: 2})  # 3 x 10.00 + 2 x 20.00
    r = (await rs.returns.CreateReturn(
        return_request(order, (1, 3, NOT_NEEDED), (2, 2, DEFECTIVE)))).customer_return
    assert r.status == RS.RETURN_STATUS_REQUESTED and r.expire_time.seconds > 0
    r = await at_dock(rs, stubs, r)
    assert r.expected_credit.amount_minor == 7000 and r.rma_number.startswith("RMA-")
    await inspect(stubs, r, (1, 3, 0, 0), (2, 0, 2, 0))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_CREDITED)

    assert r.credited.amount_minor == 7000 and r.credit_memo_id
    assert [(x.received_quantity, x.restocked_quantity, x.scrapped_quantity, x.credit.amount_minor)
            for x in r.lines] == [(3, 3, 0, 3000), (2, 0, 2, 4000)]
    memos = (await stubs.erp.ListCreditMemos(
        erp_pb2.ListCreditMemosRequest(order_id=order.order_id))).credit_memos
    assert [(m.credit_memo_id, m.total.amount_minor) for m in memos] == [(r.credit_memo_id, 7000)]
    assert await balance(stubs, world) == 0  # invoiced 70.00, credited 70.00
    assert (await rma(stubs, r.rma_number)).status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CREDITED
    # Restocked units are back in WMS stock (scrapped ones are not), and the ledger follows.
    assert await on_hand(stubs, world, a) == world.stock
    assert await on_hand(stubs, world, b) == world.stock - 2
    await ledger_follows(stubs, world)
    assert sqlite(mesh, "erp", "SELECT delta, reason, reference FROM ledger_entries WHERE sku = ? "
                  "AND reason = 'RETURN'", a) == [(3, "RETURN", r.rma_number)]
    # Every step is in the timeline, from every system on the path, in one trace.
    for step in ["requested", "authorization.requested", "rma.authorized", "expect.requested", "expected",
                 "received", "inspected", "credit.requested", "creditmemo.posted"]:
        assert step in steps(r)
    assert {e.source for e in r.timeline} == {"returns", "erp", "wms"}
    assert {e.trace_id for e in r.timeline} == {r.trace_id} and r.trace_id
    listed = (await rs.returns.ListReturns(rpb.ListReturnsRequest(order_id=order.order_id))).returns
    assert [x.return_id for x in listed] == [r.return_id] and not listed[0].timeline


async def test_partial_return_credits_only_what_was_accepted(stubs, rs):
    world = await make_world(stubs)
    a, b = world.skus[0], world.skus[1]
    order = await invoiced_order(stubs, world, {a: 4, b: 2})
    r = (await rs.returns.CreateReturn(
        return_request(order, (1, 3, DEFECTIVE), (2, 2, OTHER)))).customer_return
    # 2 of the 3 units of line 1 came back: one restocked, one scrapped; line 2 refused.
    r = await at_dock(rs, stubs, r, received={1: 2, 2: 2})
    await inspect(stubs, r, (1, 1, 1, 0), (2, 0, 0, 2))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_PARTIALLY_CREDITED)
    assert r.credited.amount_minor == 2 * 1000
    assert r.status_reason == "2 of 5 unit(s) credited: 2 refused at inspection, 1 not sent back"
    assert await balance(stubs, world) == 4 * 1000 + 2 * 2000 - 2000
    assert await on_hand(stubs, world, a) == world.stock - 4 + 1
    assert await on_hand(stubs, world, b) == world.stock - 2
    # What came back is used up (2 of 4); the units never sent back may still be returned.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(return_request(order, (1, 3, DEFECTIVE)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 2 of line 1" in info.value.details()


async def test_return_refused_at_inspection_credits_nothing(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 2})
    r = (await rs.returns.CreateReturn(return_request(order, (1, 2, OTHER)))).customer_return
    r = await at_dock(rs, stubs, r)
    await inspect(stubs, r, (1, 0, 0, 2))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_REFUSED)
    assert r.status_reason == "every unit refused at inspection" and r.credited.amount_minor == 0

    async def rma_cancelled():
        return (await rma(stubs, r.rma_number)).status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED
    await eventually(rma_cancelled, what="RMA cancelled in ERP")
    assert (await stubs.erp.ListCreditMemos(
        erp_pb2.ListCreditMemosRequest(order_id=order.order_id))).credit_memos == []
    assert await balance(stubs, world) == 2 * 1000
    assert await on_hand(stubs, world, world.skus[0]) == world.stock - 2


async def test_rma_not_received_in_time_expires_and_is_withdrawn(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 1})
    r = (await rs.returns.CreateReturn(return_request(order, (1, 1, NOT_NEEDED),
                                                     receive_within=Duration(seconds=1)))).customer_return
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_EXPIRED)
    assert "not received within the receive window (1 s)" in r.status_reason
    for step in ["rma.authorized", "expected", "expired", "expectation.cancelled", "compensate"]:
        assert step in steps(r)

    async def cancelled_everywhere():
        receipt = (await stubs.wms.GetReturnReceipt(wms_pb2.GetReturnReceiptRequest(
            rma_number=r.rma_number))).return_receipt
        return (receipt.status == wms_pb2.RETURN_RECEIPT_STATUS_CANCELLED
                and (await rma(stubs, r.rma_number)).status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED)
    await eventually(cancelled_everywhere, what="expectation and RMA cancelled")
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the dock refuses the parcel now
        await stubs.wms.ReceiveReturn(wms_pb2.ReceiveReturnRequest(rma_number=r.rma_number))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rma.cancelled" in steps(await wait_return(rs, r.return_id, RS.RETURN_STATUS_EXPIRED))
    # An expired return holds nothing: the goods may be returned again.
    again = (await rs.returns.CreateReturn(return_request(order, (1, 1, NOT_NEEDED)))).customer_return
    assert again.status == RS.RETURN_STATUS_REQUESTED


async def test_duplicate_create_return_makes_one_return_and_one_rma(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 2})
    req = return_request(order, (1, 2, NOT_NEEDED))
    created = await asyncio.gather(*(rs.returns.CreateReturn(req) for _ in range(5)))
    again = (await rs.returns.CreateReturn(req)).customer_return
    assert {c.customer_return.return_id for c in created} == {again.return_id}
    r = await wait_return(rs, again.return_id, RS.RETURN_STATUS_EXPECTED)
    assert r.rma_number == f"RMA-{order.order_id}-1"
    listed = (await rs.returns.ListReturns(rpb.ListReturnsRequest(order_id=order.order_id))).returns
    assert len(listed) == 1
    assert sqlite_rmas(stubs, order.order_id) == [r.rma_number]
    other = rpb.CreateReturnRequest()
    other.CopyFrom(req)
    other.lines[0].quantity = 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(other)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "request_id" in info.value.details()


def sqlite_rmas(stubs, order_id: str) -> list[str]:
    return [row[0] for row in sqlite(stubs.mesh, "erp", "SELECT rma_number FROM return_authorizations "
                                     "WHERE order_id = ?", order_id)]


async def test_only_shipped_quantities_of_shipped_orders_can_be_returned(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 3})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(return_request(order, (1, 4, DEFECTIVE)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 3 of line 1" in info.value.details() and "3 shipped" in info.value.details()
    await rs.returns.CreateReturn(return_request(order, (1, 2, DEFECTIVE)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(return_request(order, (1, 2, DEFECTIVE)))
    assert "at most 1 of line 1" in info.value.details()
    await rs.returns.CreateReturn(return_request(order, (1, 1, DEFECTIVE)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(return_request(order, (2, 1, DEFECTIVE)))
    assert "line 2 is not on the order" in info.value.details()

    short = world.order({world.skus[1]: world.stock + 1})  # backordered: never shipped
    oid = (await stubs.ots.SubmitOrder(short)).order.order_id

    async def backordered():
        o = (await stubs.ots.GetOrder(pb.GetOrderRequest(order_id=oid))).order
        return o.status == pb.ORDER_STATUS_BACKORDERED
    await eventually(backordered, what="backordered")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(rpb.CreateReturnRequest(order_id=oid, lines=[
            rpb.ReturnLine(line_number=1, quantity=1, reason=DEFECTIVE)]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "only shipped" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CreateReturn(rpb.CreateReturnRequest(order_id="ORD-NOPE", lines=[
            rpb.ReturnLine(line_number=1, quantity=1, reason=DEFECTIVE)]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_before_receipt_compensates(stubs, rs):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 2})
    r = (await rs.returns.CreateReturn(return_request(order, (1, 1, NOT_NEEDED)))).customer_return
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_EXPECTED)
    cancelling = (await rs.returns.CancelReturn(rpb.CancelReturnRequest(
        return_id=r.return_id, reason="customer kept it"))).customer_return
    assert cancelling.status == RS.RETURN_STATUS_CANCELLING
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_CANCELLED)
    assert r.status_reason == "customer kept it"

    async def rma_cancelled():
        return (await rma(stubs, r.rma_number)).status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED
    await eventually(rma_cancelled, what="RMA cancelled")
    received = await at_dock(rs, stubs, (await rs.returns.CreateReturn(
        return_request(order, (1, 2, NOT_NEEDED)))).customer_return)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rs.returns.CancelReturn(rpb.CancelReturnRequest(return_id=received.return_id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_failure_after_authorisation_is_compensated_and_nothing_credited(stubs, rs, mesh):
    world = await make_world(stubs)
    order = await invoiced_order(stubs, world, {world.skus[0]: 2})
    r = (await rs.returns.CreateReturn(return_request(order, (1, 2, NOT_NEEDED)))).customer_return
    r = await at_dock(rs, stubs, r)
    # Meanwhile someone closes the RMA in ERP: the credit memo will be refused.
    nc = await nats.connect(mesh.nats.url)
    try:
        await publish(nc, "cmd.erp.return.cancel", erp_msgs.CancelReturnAuthorization(
            return_id=r.return_id, reason="closed by the credit controller"))
    finally:
        await nc.close()

    async def rma_cancelled():
        return (await rma(stubs, r.rma_number)).status == erp_pb2.RETURN_AUTHORIZATION_STATUS_CANCELLED
    await eventually(rma_cancelled, what="RMA cancelled")
    await inspect(stubs, r, (1, 2, 0, 0))
    r = await wait_return(rs, r.return_id, RS.RETURN_STATUS_REFUSED)
    assert r.status_reason.startswith("credit refused by ERP: RMA_NOT_AUTHORIZED")
    assert "creditmemo.refused" in steps(r) and "compensate" in steps(r)
    assert r.credited.amount_minor == 0 and not r.credit_memo_id
    assert (await stubs.erp.ListCreditMemos(
        erp_pb2.ListCreditMemosRequest(order_id=order.order_id))).credit_memos == []
    assert await balance(stubs, world) == 2 * 1000


@pytest.fixture
async def stubs(mesh):  # the e2e Stubs, plus the mesh for direct store reads
    from tests.e2e.conftest import Stubs

    s = Stubs(mesh)
    s.mesh = mesh
    yield s
    await s.close()
