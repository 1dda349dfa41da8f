"""What a warehouse exception or a carrier failure does to an order, in-process:
the exception policy (customer, channel, default), partial shipments invoiced
one by one, the work list and a person's resolution, cancellation of a held
order. The facts come in through ``service.advance`` as the consumers hand them
over; the commands are read from the outbox."""

from __future__ import annotations

import pytest

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import FailedPrecondition, InvalidArgument
from services.ordertoship import service
from tests.usecases.support import Outbox
from tests.usecases.test_ordertoship_orders import (
    CUSTOMER,
    OrderDesk,
    fo,
    order_desk,
    packed,
    released,
    status,
    steps,
    usd,
)


@pytest.fixture
async def desk(usecase_store) -> OrderDesk:
    return await order_desk(usecase_store)


async def commands(desk: OrderDesk) -> dict:
    """The commands left to send, by subject (taken, as the relay would)."""
    return {m.subject: m.body for m in await Outbox.read(desk.store, "cmd", take=True)}


def qty(*pairs: tuple[str, int]) -> list[SkuQuantity]:
    return [SkuQuantity(sku=s, quantity=q) for s, q in pairs]


async def exception_raised(desk: OrderDesk, order_id: str, kind: int, *lines: tuple[str, int],
                           wave: int = 1, detail: str = "") -> None:
    await desk.fact("wms.fulfilment.exception", fulfilment_order=fo(order_id, wave), kind=kind,
                    lines=qty(*lines), detail=detail)


async def shipped(desk: OrderDesk, order_id: str, wave: int, lines, remaining=()) -> str:
    shipment_id = f"SHP-{order_id}" if wave == 1 else f"SHP-{order_id}-{wave}"
    await desk.fact("tms.shipment.booked", shipment=tms_pb2.Shipment(
        shipment_id=shipment_id, order_id=order_id, carrier_id="UPS", tracking_number=f"T{wave}"))
    await desk.fact("wms.fulfilment.shipped", wave=wave, shipped_lines=qty(*lines),
                    remaining_lines=qty(*remaining),
                    fulfilment_order=fo(order_id, wave, shipment_id=shipment_id, tracking_number=f"T{wave}"))
    return shipment_id


async def invoiced(desk: OrderDesk, order_id: str, shipment_id: str, invoice_id: str) -> None:
    await desk.fact("erp.invoice.posted", invoice=erp_pb2.Invoice(
        invoice_id=invoice_id, order_id=order_id, shipment_id=shipment_id, total=usd(1)))


async def work_list(desk: OrderDesk, order_id: str, **kw) -> list[pb.OrderException]:
    return list((await service.list_exceptions(desk.store, pb.ListExceptionsRequest(
        order_id=order_id, **kw))).exceptions)


async def resolve(desk: OrderDesk, exception_id: str, action: int, by: str = "dana", **kw):
    return await service.resolve_exception(desk.store, pb.ResolveExceptionRequest(
        exception_id=exception_id, action=action, resolved_by=by, **kw))


async def test_a_short_pick_ships_what_is_there_and_the_rest_later_each_shipment_invoiced_once(desk):
    oid = await released(desk, {"SKU-A": 6, "SKU-B": 2})
    assert (await desk.order(oid)).exception_policy == pb.EXCEPTION_POLICY_SHIP_PARTIAL  # the default
    await desk.fact("wms.fulfilment.allocated", fulfilment_order=fo(oid))
    await exception_raised(desk, oid, wms_pb2.EXCEPTION_KIND_SHORT_PICK, ("SKU-A", 2),
                           detail="4 of 6 in the bin")
    assert status(await desk.order(oid)) == "ALLOCATED"  # nobody has to decide
    resolve_cmd = (await commands(desk))["cmd.wms.fulfilment.resolve"]
    assert (resolve_cmd.action, resolve_cmd.wave) == (wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL, 1)
    (exc,) = await work_list(desk, oid)
    assert (exc.kind, exc.status, exc.policy, exc.action, exc.resolved_by) == (
        pb.EXCEPTION_KIND_SHORT_PICK, pb.EXCEPTION_STATUS_RESOLVED, pb.EXCEPTION_POLICY_SHIP_PARTIAL,
        pb.RESOLUTION_ACTION_SHIP_PARTIAL, "policy")

    await packed(desk, oid)
    first = await shipped(desk, oid, 1, [("SKU-A", 4), ("SKU-B", 2)], remaining=[("SKU-A", 2)])
    o = await desk.order(oid)
    assert status(o) == "PARTIALLY_SHIPPED" and o.status_reason == "still to ship: SKU-A x2"
    post = (await commands(desk))["cmd.erp.invoice.post"]
    assert post.shipment_id == first
    assert [(x.line_number, x.quantity) for x in post.shipped_lines] == [(1, 4), (2, 2)]
    await invoiced(desk, oid, first, "INV-1")
    assert status(await desk.order(oid)) == "PARTIALLY_SHIPPED"  # the rest is still open

    # The warehouse starts the next shipment when stock is there.
    await desk.fact("wms.fulfilment.backordered", fulfilment_order=fo(oid, 2), shortages=qty(("SKU-A", 2)))
    assert status(await desk.order(oid)) == "BACKORDERED"
    await packed(desk, oid, wave=2)
    assert (await commands(desk))["cmd.tms.shipment.book"].shipment_id == f"SHP-{oid}-2"
    second = await shipped(desk, oid, 2, [("SKU-A", 2)])
    assert status(await desk.order(oid)) == "SHIPPED"
    post = (await commands(desk))["cmd.erp.invoice.post"]
    assert post.shipment_id == second
    assert [(x.line_number, x.quantity) for x in post.shipped_lines] == [(1, 2)]
    await invoiced(desk, oid, second, "INV-2")

    done = await desk.order(oid)
    assert status(done) == "INVOICED"
    assert [(s.shipment_id, s.wave, s.invoice_id) for s in done.shipments] == [
        (first, 1, "INV-1"), (second, 2, "INV-2")]
    assert [[(q.sku, q.quantity) for q in s.lines] for s in done.shipments] == [
        [("SKU-A", 4), ("SKU-B", 2)], [("SKU-A", 2)]]
    assert {"exception.short_pick", "exception.ship_partial"} <= set(steps(done))


async def test_a_damaged_line_is_cancelled_by_the_customers_policy_in_erp_too_and_never_invoiced(desk):
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        customer_id=CUSTOMER, policy=pb.EXCEPTION_POLICY_CANCEL_LINES))
    oid = await released(desk, {"SKU-A": 3, "SKU-B": 1})
    assert (await desk.order(oid)).exception_policy == pb.EXCEPTION_POLICY_CANCEL_LINES
    await desk.fact("wms.fulfilment.allocated", fulfilment_order=fo(oid))
    await desk.fact("wms.fulfilment.picked", fulfilment_order=fo(oid))
    await exception_raised(desk, oid, wms_pb2.EXCEPTION_KIND_DAMAGED, ("SKU-B", 1), detail="crushed")
    sent = await commands(desk)
    assert sent["cmd.wms.fulfilment.resolve"].action == wms_pb2.EXCEPTION_ACTION_CANCEL_LINES
    cancel = sent["cmd.erp.salesorder.cancel_lines"]
    assert [(x.line_number, x.sku, x.quantity) for x in cancel.lines] == [(2, "SKU-B", 1)]
    assert [(q.sku, q.quantity) for q in (await desk.order(oid)).cancelled_lines] == [("SKU-B", 1)]

    await desk.fact("wms.fulfilment.packed", fulfilment_order=fo(oid, package_weight_grams=900))
    sid = await shipped(desk, oid, 1, [("SKU-A", 3)])
    post = (await commands(desk))["cmd.erp.invoice.post"]
    assert [(x.line_number, x.sku, x.quantity) for x in post.shipped_lines] == [(1, "SKU-A", 3)]
    await invoiced(desk, oid, sid, "INV-1")
    done = await desk.order(oid)
    assert status(done) == "INVOICED" and "exception.cancel_lines" in steps(done)


async def test_the_hold_policy_waits_for_a_person_whose_decision_is_audited(desk):
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        customer_id=CUSTOMER, policy=pb.EXCEPTION_POLICY_HOLD))
    oid = await released(desk, {"SKU-A": 4})
    await desk.fact("wms.fulfilment.allocated", fulfilment_order=fo(oid))
    await exception_raised(desk, oid, wms_pb2.EXCEPTION_KIND_STOCK_DISCREPANCY, ("SKU-A", 1),
                           detail="counted 3, books say 4")
    held = await desk.order(oid)
    assert status(held) == "ON_HOLD" and held.status_reason == "STOCK_DISCREPANCY: counted 3, books say 4"
    assert steps(held)[-1] == "exception.held"
    assert await commands(desk) == {}  # nothing moves until someone decides
    (exc,) = await work_list(desk, oid, status=pb.EXCEPTION_STATUS_OPEN)
    assert exc.kind == pb.EXCEPTION_KIND_STOCK_DISCREPANCY and [(q.sku, q.quantity) for q in exc.lines] == [
        ("SKU-A", 1)]

    with pytest.raises(InvalidArgument) as wrong:
        await resolve(desk, exc.exception_id, pb.RESOLUTION_ACTION_RETRY)
    assert [f for f, _ in wrong.value.violations] == ["action"]

    resolved, order = await resolve(desk, exc.exception_id, pb.RESOLUTION_ACTION_CANCEL_LINES,
                                    note="customer takes 3")
    assert (resolved.status, resolved.resolved_by, resolved.note) == (
        pb.EXCEPTION_STATUS_RESOLVED, "dana", "customer takes 3")
    assert status(order) == "ALLOCATED"  # back where it was held
    assert set(await commands(desk)) == {"cmd.wms.fulfilment.resolve", "cmd.erp.salesorder.cancel_lines"}
    assert any("dana" in e.detail and "CANCEL_LINES" in e.detail for e in order.timeline)
    assert await work_list(desk, oid, status=pb.EXCEPTION_STATUS_OPEN) == []

    with pytest.raises(FailedPrecondition) as again:
        await resolve(desk, exc.exception_id, pb.RESOLUTION_ACTION_SHIP_PARTIAL, by="erin")
    assert again.value.reason == "EXCEPTION_RESOLVED"


async def test_when_every_carrier_fails_the_order_is_held_and_a_reassigned_carrier_books_it(desk):
    oid = await released(desk, {"SKU-A": 2})
    await packed(desk, oid, weight=1_400)
    await commands(desk)  # the first booking request
    await desk.fact("tms.shipment.booking_failed", order_id=oid, shipment_id=f"SHP-{oid}",
                    reason_code="ALL_CARRIERS_REFUSED", reason="no carrier accepted",
                    refused_attempts=[tms.BookingAttempt(carrier_id="AU-ONE", reason="suspended")])
    held = await desk.order(oid)
    assert status(held) == "ON_HOLD" and "ALL_CARRIERS_REFUSED" in held.status_reason
    (exc,) = await work_list(desk, oid, status=pb.EXCEPTION_STATUS_OPEN)
    assert exc.kind == pb.EXCEPTION_KIND_CARRIER_FAILED and "AU-ONE" in exc.detail

    with pytest.raises(InvalidArgument):
        await resolve(desk, exc.exception_id, pb.RESOLUTION_ACTION_REASSIGN_CARRIER)  # which carrier?
    _, order = await resolve(desk, exc.exception_id, pb.RESOLUTION_ACTION_REASSIGN_CARRIER, by="erin",
                             carrier_id="AU-TWO")
    assert status(order) == "PACKED"
    book = (await commands(desk))["cmd.tms.shipment.book"]
    assert (book.shipment_id, book.carrier_id, book.weight_grams) == (f"SHP-{oid}", "AU-TWO", 1_400)
    await desk.fact("tms.shipment.booked", shipment=tms_pb2.Shipment(
        shipment_id=f"SHP-{oid}", order_id=oid, carrier_id="AU-TWO", tracking_number="AU1"))
    o = await desk.order(oid)
    assert status(o) == "SHIPMENT_BOOKED" and o.carrier_id == "AU-TWO"


async def test_cancelling_a_held_order_settles_its_open_exception(desk):
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        customer_id=CUSTOMER, policy=pb.EXCEPTION_POLICY_HOLD))
    oid = await released(desk, {"SKU-A": 2})
    await desk.fact("wms.fulfilment.allocated", fulfilment_order=fo(oid))
    await exception_raised(desk, oid, wms_pb2.EXCEPTION_KIND_SHORT_PICK, ("SKU-A", 1))
    o = await service.cancel_order(desk.store, oid, "customer gave up")
    assert status(o) == "CANCELLING"
    assert set(await commands(desk)) == {"cmd.wms.fulfilment.cancel"}
    (exc,) = await work_list(desk, oid)
    assert (exc.status, exc.action, exc.resolved_by) == (
        pb.EXCEPTION_STATUS_RESOLVED, pb.RESOLUTION_ACTION_CANCEL_ORDER, "cancel request")


async def test_the_policy_is_the_customers_else_the_channels_else_the_default_fixed_at_submission(desk):
    async def policy_of(channel: str) -> int:
        return (await desk.submit({"SKU-A": 1}, channel=channel)).exception_policy

    assert await policy_of("web") == pb.EXCEPTION_POLICY_SHIP_PARTIAL  # nothing set: the service's default
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        policy=pb.EXCEPTION_POLICY_HOLD))
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        channel="web", policy=pb.EXCEPTION_POLICY_CANCEL_LINES))
    assert await policy_of("web") == pb.EXCEPTION_POLICY_CANCEL_LINES
    assert await policy_of("edi") == pb.EXCEPTION_POLICY_HOLD
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
        customer_id=CUSTOMER, policy=pb.EXCEPTION_POLICY_SHIP_PARTIAL))
    assert await policy_of("web") == pb.EXCEPTION_POLICY_SHIP_PARTIAL
    # Without a policy, a customer's rule is removed.
    await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(customer_id=CUSTOMER))
    assert await policy_of("web") == pb.EXCEPTION_POLICY_CANCEL_LINES
    rules = await service.list_exception_policies(desk.store, "SHIP_PARTIAL")
    assert [(r.scope, r.key, r.policy) for r in rules] == [
        ("channel", "web", pb.EXCEPTION_POLICY_CANCEL_LINES), ("default", "", pb.EXCEPTION_POLICY_HOLD)]
    with pytest.raises(InvalidArgument):
        await service.set_exception_policy(desk.store, pb.SetExceptionPolicyRequest(
            customer_id=CUSTOMER, channel="web", policy=pb.EXCEPTION_POLICY_HOLD))
