"""Warehouse exceptions, carrier failures and partial shipments in the order-to-ship workflow (no I/O)."""

from __future__ import annotations

import pytest

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp
from crossdock.tms.v1 import messages_pb2 as tms
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import messages_pb2 as wms
from crossdock.wms.v1 import wms_pb2
from services.ordertoship import workflow


def order(status: str = "ALLOCATED", policy: str = "SHIP_PARTIAL", **kw) -> workflow.Order:
    return workflow.Order(
        order_id="O1", customer_id="C1", status=status, warehouse_id="WH1",
        lines=[workflow.Line(1, "A", 4, 500), workflow.Line(2, "B", 1, 1000)],
        ship_to=Address(country_code="US"), shortage_policy="BACKORDER", service_level="",
        currency_code="USD", total_minor=3000, exception_policy=policy, **kw)


def short_pick(wave: int = 1, kind=wms_pb2.EXCEPTION_KIND_SHORT_PICK) -> wms.FulfilmentExceptionRaised:
    return wms.FulfilmentExceptionRaised(
        fulfilment_order=wms_pb2.FulfilmentOrder(order_id="O1", wave=wave), kind=kind,
        lines=[SkuQuantity(sku="A", quantity=3)], detail="found less than allocated: A 1 of 4")


def commands(d: workflow.Decision) -> dict:
    return dict(d.commands)


def test_ship_partial_policy_decides_at_once_and_backorders_the_rest():
    d = workflow.react(order(), "wms.fulfilment.exception", short_pick())
    assert d.status is None  # nothing waits for a person
    (r,) = d.raised
    assert (r.kind, r.status, r.action, r.resolved_by) == ("SHORT_PICK", "RESOLVED", "SHIP_PARTIAL", "policy")
    cmd = commands(d)["cmd.wms.fulfilment.resolve"]
    assert cmd.action == wms_pb2.EXCEPTION_ACTION_SHIP_PARTIAL and cmd.wave == 1
    assert "cmd.erp.salesorder.cancel_lines" not in commands(d)


def test_cancel_lines_policy_cancels_the_missing_quantity_in_erp_too():
    d = workflow.react(order(policy="CANCEL_LINES"), "wms.fulfilment.exception",
                       short_pick(kind=wms_pb2.EXCEPTION_KIND_DAMAGED))
    assert commands(d)["cmd.wms.fulfilment.resolve"].action == wms_pb2.EXCEPTION_ACTION_CANCEL_LINES
    erp_cmd = commands(d)["cmd.erp.salesorder.cancel_lines"]
    assert [(x.line_number, x.sku, x.quantity) for x in erp_cmd.lines] == [(1, "A", 3)]
    assert d.cancelled_lines == {1: 3}
    assert d.raised[0].kind == "DAMAGED"


def test_hold_policy_waits_for_a_person_who_then_decides():
    o = order("PICKED", policy="HOLD")
    d = workflow.react(o, "wms.fulfilment.exception", short_pick())
    assert d.status == "ON_HOLD" and d.commands == [] and d.updates["held_from"] == "PICKED"
    assert d.raised[0].status == "OPEN"
    o.status, o.held_from = "ON_HOLD", "PICKED"
    exc = workflow.OpenException("E1", "SHORT_PICK", [("A", 3)], 1)
    d = workflow.resolve(o, exc, "CANCEL_LINES", "alice", note="customer agreed")
    assert d.status == "PICKED"
    assert d.resolution == workflow.Resolution("E1", "CANCEL_LINES", "alice", "customer agreed")
    assert set(commands(d)) == {"cmd.wms.fulfilment.resolve", "cmd.erp.salesorder.cancel_lines"}
    assert any("alice" in e.detail for e in d.entries)


def test_a_warehouse_exception_cannot_be_resolved_with_a_carrier_action():
    exc = workflow.OpenException("E1", "SHORT_PICK", [("A", 3)], 1)
    with pytest.raises(workflow.InvalidAction):
        workflow.resolve(order("ON_HOLD", held_from="ALLOCATED"), exc, "RETRY", "bob")


def test_carrier_failure_resolved_by_retry_or_reassignment_books_the_same_shipment():
    o = order("ON_HOLD", held_from="PACKED", package_weight_grams=1200, wave=2)
    exc = workflow.OpenException("E2", "CARRIER_FAILED", [], 2)
    d = workflow.resolve(o, exc, "RETRY", "carol")
    book = commands(d)["cmd.tms.shipment.book"]
    assert d.status == "PACKED" and book.shipment_id == "SHP-O1-2" and book.weight_grams == 1200
    assert book.carrier_id == ""
    d = workflow.resolve(o, exc, "REASSIGN_CARRIER", "carol", carrier_id="DHL")
    assert commands(d)["cmd.tms.shipment.book"].carrier_id == "DHL"
    with pytest.raises(workflow.InvalidAction):
        workflow.resolve(o, exc, "REASSIGN_CARRIER", "carol")
    d = workflow.resolve(o, exc, "CANCEL_ORDER", "carol")
    assert d.status == "CANCELLING" and "cmd.wms.fulfilment.cancel" in commands(d)


def test_booking_after_refusals_records_each_refusal():
    sh = tms_pb2.Shipment(shipment_id="SHP-O1", order_id="O1", carrier_id="DHL", tracking_number="T")
    d = workflow.react(order("PACKED"), "tms.shipment.booked", tms.ShipmentBooked(
        shipment=sh, refused_attempts=[tms.BookingAttempt(carrier_id="UPS", reason="down")]))
    assert d.status == "SHIPMENT_BOOKED"
    assert [e.step for e in d.entries][:1] == ["carrier.refused"]


def shipped(wave: int, shipped_lines, remaining=(), sid: str = "") -> wms.FulfilmentShipped:
    return wms.FulfilmentShipped(
        fulfilment_order=wms_pb2.FulfilmentOrder(order_id="O1", wave=wave, shipment_id=sid,
                                                 tracking_number="T"),
        wave=wave, shipped_lines=[SkuQuantity(sku=s, quantity=q) for s, q in shipped_lines],
        remaining_lines=[SkuQuantity(sku=s, quantity=q) for s, q in remaining])


def invoice(shipment_id: str, invoice_id: str) -> erp.InvoicePosted:
    return erp.InvoicePosted(invoice=erp_pb2.Invoice(
        invoice_id=invoice_id, order_id="O1", shipment_id=shipment_id,
        total=Money(currency_code="USD", amount_minor=1)))


def test_partial_shipments_are_invoiced_one_by_one_and_the_order_completes_after_the_last():
    o = order("SHIPMENT_BOOKED")
    d = workflow.react(o, "wms.fulfilment.shipped", shipped(1, [("A", 1), ("B", 1)], [("A", 3)], "SHP-O1"))
    assert d.status == "PARTIALLY_SHIPPED"
    post = commands(d)["cmd.erp.invoice.post"]
    assert post.shipment_id == "SHP-O1"
    assert [(x.line_number, x.quantity) for x in post.shipped_lines] == [(1, 1), (2, 1)]
    o.status, o.shipments = "PARTIALLY_SHIPPED", {"SHP-O1": ""}
    # A repeat of the same ship confirmation invoices nothing more.
    assert not workflow.react(o, "wms.fulfilment.shipped",
                              shipped(1, [("A", 1), ("B", 1)], [("A", 3)], "SHP-O1")).commands
    # The first invoice arrives while the rest still waits: recorded, not finished.
    d = workflow.react(o, "erp.invoice.posted", invoice("SHP-O1", "INV-1"))
    assert d.status is None and d.invoices == {"SHP-O1": "INV-1"}
    o.shipments = {"SHP-O1": "INV-1"}
    # The next shipment starts when the stock is there.
    d = workflow.react(o, "wms.fulfilment.allocated", wms.FulfilmentAllocated(
        fulfilment_order=wms_pb2.FulfilmentOrder(order_id="O1", wave=2)))
    assert d.status == "ALLOCATED" and d.updates["wave"] == 2
    o.status, o.wave = "PACKED", 2
    d = workflow.react(o, "tms.shipment.booked", tms.ShipmentBooked(shipment=tms_pb2.Shipment(
        shipment_id="SHP-O1-2", order_id="O1", carrier_id="UPS")))
    o.status = "SHIPMENT_BOOKED"
    d = workflow.react(o, "wms.fulfilment.shipped", shipped(2, [("A", 3)], sid="SHP-O1-2"))
    assert d.status == "SHIPPED"
    post = commands(d)["cmd.erp.invoice.post"]
    assert [(x.line_number, x.quantity) for x in post.shipped_lines] == [(1, 3)]
    o.status, o.shipments = "SHIPPED", {"SHP-O1": "INV-1", "SHP-O1-2": ""}
    assert workflow.react(o, "erp.invoice.posted", invoice("SHP-O1-2", "INV-2")).status == "INVOICED"


def test_a_late_event_of_an_earlier_shipment_does_not_move_the_order_back():
    o = order("ALLOCATED", wave=2)
    d = workflow.react(o, "wms.fulfilment.picked", wms.FulfilmentPicked(
        fulfilment_order=wms_pb2.FulfilmentOrder(order_id="O1", wave=1)))
    assert d.status is None and "late" in d.entries[0].detail


def test_an_order_on_hold_or_partially_shipped_can_be_cancelled():
    for status in ("ON_HOLD", "PARTIALLY_SHIPPED"):
        d = workflow.cancel(order(status), "customer changed their mind")
        assert d.status == "CANCELLING" and "cmd.wms.fulfilment.cancel" in commands(d)
